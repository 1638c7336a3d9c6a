"""Small assertions shared by the tests (imported as `helpers`: pytest puts tests/ on sys.path)."""


def assert_json_error(response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"error": message}
