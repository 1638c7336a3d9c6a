"""transactional.list/get/create/update/delete (delivery-contract 3.1-3.6, checks 18-28)."""

from __future__ import annotations

from helpers import assert_json_error
from txkit import notification, ok, setup

KEYS = ["id", "name", "description", "channels", "tracking_settings", "created_at", "updated_at"]


async def create(client, ws, n: dict, headers=None):
    return await client.post("/api/transactional.create", headers=headers or ws.headers,
                             json={"workspace_id": ws.id, "notification": n})


async def get(client, ws, notification_id: str):
    return await client.get("/api/transactional.get", headers=ws.headers,
                            params={"workspace_id": ws.id, "id": notification_id})


async def listed(client, ws, **params) -> dict:
    return await ok(await client.get("/api/transactional.list", headers=ws.headers,
                                     params={"workspace_id": ws.id, **params}))


async def update(client, ws, notification_id: str, updates: dict):
    return await client.post("/api/transactional.update", headers=ws.headers,
                             json={"workspace_id": ws.id, "id": notification_id, "updates": updates})


async def delete(client, ws, notification_id: str):
    return await client.post("/api/transactional.delete", headers=ws.headers,
                             json={"workspace_id": ws.id, "id": notification_id})


async def test_create_and_get_the_same_object(client, ws):
    await setup(client, ws)
    body = await ok(await create(client, ws, notification("n2")), 201)
    n = body["notification"]
    assert list(n) == KEYS
    assert n["description"] == "" and n["tracking_settings"] == {"enable_tracking": False}
    assert n["channels"] == {"email": {"template_id": "welcome"}}
    assert (await ok(await get(client, ws, "n2"))) == body
    metadata = await ok(await create(client, ws, notification("n3", metadata={"a": 1}, tracking_settings={
        "enable_tracking": True, "utm_source": "app"})), 201)
    assert metadata["notification"]["metadata"] == {"a": 1}
    assert metadata["notification"]["tracking_settings"] == {"enable_tracking": True, "utm_source": "app"}


async def test_create_refusals_in_order(client, ws):
    await setup(client, ws)
    v = "validation error: "
    cases = [
        ({"name": "x", "channels": {"email": {"template_id": "welcome"}}}, v + "notification.id is required"),
        ({"id": "x", "channels": {"email": {"template_id": "welcome"}}}, v + "notification.name is required"),
        ({"id": "x", "name": "x", "channels": {}}, v + "notification must have at least one channel"),
        (notification("x" * 33), v + "notification.id exceeds 32 characters"),
        (notification("a b"), v + "notification.id must not contain whitespace"),
        ({**notification("x"), "name": "n" * 256}, v + "notification.name exceeds 255 characters"),
        ({**notification("x"), "channels": {"sms": {"template_id": "welcome"}}}, v + "unsupported channel: sms"),
        (notification("x", template_id="missing"), "invalid template for channel email: template not found"),
        (notification("x", template_id=""), "invalid template for channel email: template not found"),
        ({**notification("x"), "name": 5}, "Invalid request body"),
    ]
    for n, message in cases:
        assert_json_error(await create(client, ws, n), 400, message)
    assert (await listed(client, ws))["total"] == 1


async def test_duplicate_is_409_and_a_deleted_id_is_reused(client, ws):
    await setup(client, ws)
    await ok(await create(client, ws, notification("n2")), 201)
    assert_json_error(await create(client, ws, notification("n2")), 409, "Notification already exists")
    await ok(await delete(client, ws, "n2"))
    again = await ok(await create(client, ws, {**notification("n2"), "description": "second"}), 201)
    assert again["notification"]["description"] == "second"


async def test_list_search_is_literal_and_pages(client, ws, new_workspace):
    other = await new_workspace()
    assert await listed(client, other) == {"notifications": [], "total": 0}
    await setup(client, ws)
    for nid, name in (("n2", "N2"), ("nx", "NX"), ("n_3", "Third")):
        await ok(await create(client, ws, {**notification(nid), "name": name}), 201)
    assert (await listed(client, ws, search="N%"))["total"] == 0
    assert [n["id"] for n in (await listed(client, ws, search="n_"))["notifications"]] == ["n_3"]
    assert [n["id"] for n in (await listed(client, ws, search="nX"))["notifications"]] == ["nx"]
    everything = await listed(client, ws)
    assert everything["total"] == 4 and [n["id"] for n in everything["notifications"]][0] == "n_3"
    page = await listed(client, ws, limit="2", offset="1")
    assert page["total"] == 4 and [n["id"] for n in page["notifications"]] == \
        [n["id"] for n in everything["notifications"]][1:3]
    assert len((await listed(client, ws, limit="x", offset="y"))["notifications"]) == 4
    r = await client.get("/api/transactional.list", headers=ws.headers, params={"workspace_id": ws.id, "offset": "-1"})
    assert_json_error(r, 400, "validation error: offset must be >= 0")


async def test_update_merge_rule(client, ws):
    await setup(client, ws)
    await ok(await create(client, ws, {**notification("n2"), "description": "d", "metadata": {"a": 1}}), 201)
    renamed = (await ok(await update(client, ws, "n2", {"name": "Renamed"})))["notification"]
    assert renamed["name"] == "Renamed" and renamed["channels"] == {"email": {"template_id": "welcome"}}
    assert renamed["description"] == "d" and renamed["metadata"] == {"a": 1}
    # "" and null alone are no update (the contract's rule); beside a real change they clear
    assert_json_error(await update(client, ws, "n2", {"description": "", "metadata": None, "name": ""}), 400,
                      "validation error: at least one field must be updated")
    cleared = await ok(await update(client, ws, "n2", {"description": "", "metadata": None, "name": "",
                                                       "tracking_settings": {"enable_tracking": False}}))
    assert "metadata" not in cleared["notification"] and cleared["notification"]["description"] == ""
    tracked = await ok(await update(client, ws, "n2", {"tracking_settings": {"enable_tracking": True}}))
    assert tracked["notification"]["tracking_settings"] == {"enable_tracking": True}
    assert (await ok(await get(client, ws, "n2")))["notification"]["name"] == "Renamed"
    assert_json_error(await update(client, ws, "n2", {}), 400, "validation error: at least one field must be updated")
    assert_json_error(await update(client, ws, "n2", {"channels": {"email": {"template_id": "missing"}}}), 400,
                      "invalid template for channel email: template not found")
    assert_json_error(await update(client, ws, "nope", {"name": "x"}), 404, "Notification not found")


async def test_integration_managed_notifications_keep_name_and_channels(client, ws, pool):
    await setup(client, ws)
    await ok(await create(client, ws, notification("n2")), 201)
    await pool.execute("UPDATE transactional_notifications SET integration_id = 'sb1' WHERE workspace_id = $1"
                       " AND id = 'n2'", ws.id)
    suffix = "integration-managed notification: notification is managed by integration sb1"
    assert_json_error(await update(client, ws, "n2", {"name": "Other"}), 400, "cannot update name of " + suffix)
    assert_json_error(await update(client, ws, "n2", {"channels": {"email": {"template_id": "welcome"}}}), 400,
                      "cannot update channels of " + suffix)
    assert_json_error(await delete(client, ws, "n2"), 400, "cannot delete " + suffix)
    kept = await ok(await update(client, ws, "n2", {"description": "ok"}))
    assert kept["notification"]["integration_id"] == "sb1"


async def test_delete_then_get_and_delete_again(client, ws):
    await setup(client, ws)
    await ok(await create(client, ws, notification("n2")), 201)
    assert await ok(await delete(client, ws, "n2")) == {"success": True}
    assert_json_error(await get(client, ws, "n2"), 404, "Notification not found")
    assert_json_error(await delete(client, ws, "n2"), 404, "Notification not found")
    r = await client.get("/api/transactional.get", headers=ws.headers, params={"workspace_id": ws.id})
    assert_json_error(r, 400, "validation error: id is required")


async def test_permissions(client, ws):
    await setup(client, ws)
    reader = {"Authorization": f"Bearer {await ws.key('transactional:r,message_history:r')}"}
    assert_json_error(await create(client, ws, notification("n2"), reader), 403,
                      "Insufficient permissions: write access to transactional notifications required")
    no_templates = {"Authorization": f"Bearer {await ws.key('transactional:rw')}"}
    assert_json_error(await create(client, ws, notification("n2"), no_templates), 403,
                      "Insufficient permissions: read access to templates required")
    r = await client.get("/api/transactional.list", headers=reader, params={"workspace_id": ws.id})
    assert r.status_code == 200
    # validation comes before membership and permissions
    assert_json_error(await create(client, ws, {"name": "x"}, reader), 400, "validation error: notification.id is required")
