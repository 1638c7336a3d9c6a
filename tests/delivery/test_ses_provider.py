"""Amazon SES v1 (delivery-contract 1.2, 2.2, 2.8): SigV4 against AWS's vectors and botocore, the
two actions with their exact parameters (the local fake), the configuration set cache, the
classification of every error, and the real API shapes through moto's server mode, which checks
the signature itself."""

from __future__ import annotations

import base64
import datetime
import email
import email.policy
import json
import urllib.request

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from fakes.ses_fake import SesFake
from fakes.webhook_receiver import serving
from helpers import provider_message
from postroom.delivery import sigv4
from postroom.delivery.providers import load
from postroom.delivery.providers.base import Attachment, Context, Message, ProviderConfigError, SendFailed
from postroom.delivery.providers.ses import Settings, SesProvider

INTEGRATION = "5b7c0f0e-2d2a-4c59-9b7e-2f4f6a0b9f11"
SET = f"notifuse-{INTEGRATION}"
PDF = b"%PDF-1.4 invoice"


def message(**changes) -> Message:
    return provider_message(**{"message_id": "9d1e0c55-2222-4222-8222-000000000001", **changes})


@pytest.fixture
async def fake():
    f = SesFake()
    async with serving(f):
        yield f


@pytest.fixture
async def context(fake):
    ctx = Context(base_urls={"ses": fake.url})
    yield ctx
    await ctx.aclose()


def ses(fake: SesFake, context: Context, integration_id: str | None = INTEGRATION, **kwargs) -> SesProvider:
    settings = Settings.parse({"region": "eu-west-1", "access_key": fake.access_key, "secret_key": "s3cr3t"})
    return SesProvider(settings, context, integration_id, **kwargs)


async def failure(provider: SesProvider, msg: Message) -> SendFailed:
    with pytest.raises(SendFailed) as failed:
        await provider.send(msg)
    return failed.value


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize("raw, error", [
    ({}, "region is required when Amazon SES is configured"),
    ({"region": "", "access_key": ""}, "region is required when Amazon SES is configured"),
    ({"region": "eu-west-1"}, "access key is required when Amazon SES is configured"),
    ({"region": "eu-west-1", "access_key": "AK"}, "secret key is required when Amazon SES is configured"),
    ({"region": "evil.test/#", "access_key": "AK", "secret_key": "s"}, "invalid region for Amazon SES: evil.test/#"),
])
def test_settings_refused_in_table_order(raw, error):
    with pytest.raises(ProviderConfigError) as refused:
        Settings.parse(raw)
    assert refused.value.message == error


def test_settings_and_endpoint():
    s = Settings.parse({"region": "us-gov-west-1", "access_key": "AK", "secret_key": "s"})
    assert s.endpoint == "https://email.us-gov-west-1.amazonaws.com/"
    assert load("ses").SECRETS == ("secret_key",)


# ---------------------------------------------------------------- SigV4

VECTOR_KEY = dict(access_key="AKIDEXAMPLE", secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", region="us-east-1")
VECTOR_TIME = datetime.datetime(2015, 8, 30, 12, 36, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize("method, url, headers, body, service, signature", [
    # aws-sig-v4-test-suite get-vanilla
    ("GET", "https://example.amazonaws.com/", {}, b"", "service",
     "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    # aws-sig-v4-test-suite post-x-www-form-urlencoded
    ("POST", "https://example.amazonaws.com/", {"Content-Type": "application/x-www-form-urlencoded"}, b"Param1=value1",
     "service", "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"),
    # the IAM ListUsers example of AWS's signing documentation
    ("GET", "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08",
     {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}, b"", "iam",
     "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"),
])
def test_sigv4_matches_the_aws_test_vectors(method, url, headers, body, service, signature):
    signed = sigv4.sign(method, url, headers, body, service=service, now=VECTOR_TIME, **VECTOR_KEY)
    assert signed["X-Amz-Date"] == "20150830T123600Z"
    assert signed["Authorization"].endswith(f"Signature={signature}")
    assert f"Credential=AKIDEXAMPLE/20150830/us-east-1/{service}/aws4_request, " in signed["Authorization"]


@pytest.mark.parametrize("url", ["https://email.eu-west-1.amazonaws.com/", "http://127.0.0.1:8765/"])
def test_sigv4_agrees_with_botocore_on_an_ses_request(url):
    body = b"Action=SendEmail&Version=2010-12-01&Source=Acme+%3Cnoreply%40acme.test%3E&Message.Subject.Data=H%C3%A9"
    now = datetime.datetime(2025, 3, 1, 8, 30, 5, tzinfo=datetime.timezone.utc)
    ours = sigv4.sign("POST", url, {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}, body,
                      access_key="AKIAEXAMPLE", secret_key="abc/def+ghi", region="eu-west-1", service="ses", now=now)
    request = AWSRequest(method="POST", url=url, data=body, headers={k: v for k, v in ours.items() if k != "Authorization"})
    request.context["timestamp"] = ours["X-Amz-Date"]
    auth = SigV4Auth(Credentials("AKIAEXAMPLE", "abc/def+ghi"), "ses", "eu-west-1")
    expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    assert ours["Authorization"].endswith(f"Signature={expected}")
    assert "SignedHeaders=content-type;host;x-amz-date," in ours["Authorization"]


# ---------------------------------------------------------------- the two actions, exactly


async def test_send_email_parameters_exactly(fake, context):
    fake.configuration_sets = [SET]
    msg = message(from_name="Acme, Inc.", cc=("c@example.com", "JANE@example.com"), bcc=("b@example.com",),
                  reply_to="r@acme.test")
    sent = await ses(fake, context).send(msg)
    [call] = fake.of("SendEmail")
    assert call.method == "POST" and call.path == "/"
    assert call.form == {
        "Action": "SendEmail", "Version": "2010-12-01", "Source": '"Acme, Inc." <noreply@acme.test>',
        "Destination.ToAddresses.member.1": "jane@example.com",
        "Destination.CcAddresses.member.1": "c@example.com", "Destination.BccAddresses.member.1": "b@example.com",
        "Message.Subject.Data": "Hi Jane", "Message.Subject.Charset": "UTF-8",
        "Message.Body.Html.Data": "<p>Code X1</p>", "Message.Body.Html.Charset": "UTF-8",
        "Message.Body.Text.Data": "Code X1", "Message.Body.Text.Charset": "UTF-8",
        "ReplyToAddresses.member.1": "r@acme.test", "ConfigurationSetName": SET,
        "Tags.member.1.Name": "notifuse_message_id", "Tags.member.1.Value": "9d1e0c55-2222-4222-8222-000000000001"}
    assert call.headers["content-type"] == "application/x-www-form-urlencoded; charset=utf-8"
    assert call.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDPOSTROOMTEST/")
    assert "/eu-west-1/ses/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=" in call.headers["authorization"]
    assert sent.provider_message_id.startswith("0100018f-") and sent.note is None


async def test_without_text_or_copies_the_optional_parameters_are_absent(fake, context):
    await ses(fake, context, None).send(message(text=None))
    form = fake.of("SendEmail")[0].form
    assert not [k for k in form if k.startswith(("Destination.Cc", "Destination.Bcc", "Message.Body.Text",
                                                 "ReplyTo", "ConfigurationSetName"))]
    assert not fake.of("ListConfigurationSets")       # no integration id, no set to look for


async def test_send_raw_email_with_attachment_cc_and_bcc(fake, context):
    msg = message(cc=("c@example.com",), bcc=("b@example.com",),
                  attachments=(Attachment("invoice.pdf", PDF), Attachment("logo.png", b"\x89PNG\r\n\x1a\n", disposition="inline")))
    await ses(fake, context).send(msg)
    [call] = fake.of("SendRawEmail")
    assert set(call.form) == {"Action", "Version", "RawMessage.Data", "Destinations.member.1", "Destinations.member.2",
                              "Destinations.member.3", "Tags.member.1.Name", "Tags.member.1.Value"}
    assert call.members("Destinations") == ["jane@example.com", "c@example.com", "b@example.com"]
    assert call.form["Tags.member.1.Value"] == msg.message_id
    raw = email.message_from_bytes(base64.b64decode(call.form["RawMessage.Data"]), policy=email.policy.default)
    assert raw["X-Message-ID"] == msg.message_id and raw["Cc"] == "c@example.com" and raw["Bcc"] is None
    assert raw["Message-ID"] == f"<{msg.message_id}@acme.test>"
    assert raw.get_content_type() == "multipart/mixed"
    assert [p.get_filename() for p in raw.walk() if p.get_filename()] == ["logo.png", "invoice.pdf"]


async def test_a_list_unsubscribe_url_alone_makes_it_raw(fake, context):
    await ses(fake, context).send(message(list_unsubscribe_url="https://acme.test/u/1"))
    [call] = fake.of("SendRawEmail")
    raw = email.message_from_bytes(base64.b64decode(call.form["RawMessage.Data"]), policy=email.policy.default)
    assert raw["List-Unsubscribe"] == "<https://acme.test/u/1>" and raw["List-Unsubscribe-Post"]
    assert not fake.of("SendEmail")


async def test_idna_domains_and_a_non_ascii_local_part(fake, context):
    provider = ses(fake, context)
    await provider.send(message(to="jane@exämple.com", from_address="noreply@bücher.test"))
    form = fake.of("SendEmail")[0].form
    assert form["Destination.ToAddresses.member.1"] == "jane@xn--exmple-cua.com"
    assert form["Source"] == "Acme <noreply@xn--bcher-kva.test>"
    calls = len(fake.calls)
    failed = await failure(provider, message(bcc=("zoë@example.com",)))
    assert failed.cls == "message" and "zoë@example.com has a non-ASCII local part" in failed.status_info
    failed = await failure(provider, message(subject="Hi\nBcc: x@example.com"))
    assert failed.status_info == "ses: subject must not contain CR or LF characters"
    assert len(fake.calls) == calls                    # refused before any request


# ---------------------------------------------------------------- configuration set


async def test_configuration_set_looked_up_once_and_kept_ten_minutes(fake, context):
    fake.configuration_sets = ["other", SET]
    now = [1000.0]
    provider = ses(fake, context, clock=lambda: now[0])
    await provider.send(message())
    await provider.send(message(attachments=(Attachment("a.pdf", PDF),)))
    assert len(fake.of("ListConfigurationSets")) == 1
    assert fake.of("SendEmail")[0].form["ConfigurationSetName"] == SET
    assert fake.of("SendRawEmail")[0].form["ConfigurationSetName"] == SET
    now[0] += 599
    await provider.send(message())
    assert len(fake.of("ListConfigurationSets")) == 1
    now[0] += 2
    await provider.send(message())
    assert len(fake.of("ListConfigurationSets")) == 2


async def test_absent_set_is_not_sent_and_the_answer_is_kept_too(fake, context):
    fake.configuration_sets = ["notifuse-someone-else"]
    provider = ses(fake, context)
    await provider.send(message())
    await provider.send(message())
    assert [("ConfigurationSetName" in c.form) for c in fake.of("SendEmail")] == [False, False]
    assert len(fake.of("ListConfigurationSets")) == 1


async def test_every_page_of_configuration_sets_is_read(fake, context):
    fake.configuration_sets = ["a", "b", "c", SET]
    fake.page_size = 1
    await ses(fake, context).send(message())
    pages = fake.of("ListConfigurationSets")
    assert [p.form.get("NextToken") for p in pages] == [None, "1", "2", "3"]
    assert fake.of("SendEmail")[0].form["ConfigurationSetName"] == SET


async def test_a_deleted_set_is_dropped_and_the_message_sent_without(fake, context):
    fake.configuration_sets = [SET]
    fake.fail("SendEmail", 400, "ConfigurationSetDoesNotExist", f"Configuration set <{SET}> does not exist.")
    provider = ses(fake, context)
    sent = await provider.send(message())
    first, retry = fake.of("SendEmail")
    assert first.form["ConfigurationSetName"] == SET and "ConfigurationSetName" not in retry.form
    assert first.form["Tags.member.1.Value"] == retry.form["Tags.member.1.Value"]
    assert sent.provider_message_id
    fake.configuration_sets = []
    await provider.send(message())                     # the cache entry was dropped: asked again
    assert len(fake.of("ListConfigurationSets")) == 2
    assert "ConfigurationSetName" not in fake.of("SendEmail")[-1].form


async def test_a_refused_lookup_sends_without_and_is_not_asked_per_message(fake, context):
    fake.fail("ListConfigurationSets", 403, "AccessDenied", "not authorized to perform ses:ListConfigurationSets")
    provider = ses(fake, context)
    await provider.send(message())
    await provider.send(message())
    assert len(fake.of("ListConfigurationSets")) == 1 and len(fake.of("SendEmail")) == 2


async def test_a_lookup_during_an_outage_is_asked_again(fake, context):
    fake.fail("ListConfigurationSets", 503, "ServiceUnavailable", "try later")
    fake.configuration_sets = [SET]
    provider = ses(fake, context)
    await provider.send(message())
    await provider.send(message())
    assert len(fake.of("ListConfigurationSets")) == 2
    assert ["ConfigurationSetName" in c.form for c in fake.of("SendEmail")] == [False, True]


# ---------------------------------------------------------------- classification (2.8)


@pytest.mark.parametrize("status, code, text, cls", [
    (400, "MessageRejected", "Address blacklisted.", "recipient"),
    (400, "MessageRejected", "Email address is not verified. The following identities failed the check in region "
                             "EU-WEST-1: noreply@acme.test", "provider"),
    (400, "MessageRejected", "Sending from domain acme.test is not allowed", "provider"),
    (400, "MailFromDomainNotVerifiedException", "MAIL FROM domain not verified", "provider"),
    (400, "ConfigurationSetDoesNotExist", "Configuration set <x> does not exist.", "provider"),
    (400, "AccountSendingPausedException", "Sending paused for this account.", "provider"),
    (403, "InvalidClientTokenId", "The security token included in the request is invalid.", "provider"),
    (403, "SignatureDoesNotMatch", "The request signature we calculated does not match", "provider"),
    (403, "AccessDenied", "User is not authorized to perform ses:SendEmail", "provider"),
    (403, "ExpiredToken", "The security token included in the request is expired", "provider"),
    (400, "InvalidParameterValue", "Missing final '@domain'", "message"),
    (400, "InvalidParameterValue", "Message length is more than 10 megabytes", "message"),
    (413, "", "Request Entity Too Large", "message"),
    (400, "SomethingNew", "unheard of", "message"),
    (500, "InternalFailure", "internal error", "provider"),
    (503, "ServiceUnavailable", "Service is unavailable", "provider"),
])
async def test_each_error_code_gives_its_class(fake, context, status, code, text, cls):
    fake.fail("SendEmail", status, code, text)
    failed = await failure(ses(fake, context, None), message())
    assert failed.cls == cls
    assert failed.status_info == f"ses: HTTP {status}{' ' + code if code else ''}: {text}"[:255]
    assert failed.retry_after is None


@pytest.mark.parametrize("status, code, text, headers, wait", [
    (400, "Throttling", "Maximum sending rate exceeded.", None, 30.0),
    (400, "Throttling", "Maximum sending rate exceeded.", {"Retry-After": "7"}, 7.0),
    (400, "Throttling", "Daily message quota exceeded.", None, 600.0),
    (429, "", "Too Many Requests", {"Retry-After": "3"}, 3.0),
])
async def test_throttling_waits_as_told_and_ten_minutes_for_the_daily_quota(fake, context, status, code, text, headers, wait):
    fake.fail("SendEmail", status, code, text, headers=headers)
    failed = await failure(ses(fake, context, None), message())
    assert (failed.cls, failed.retry_after) == ("throttled", wait)


async def test_a_body_that_is_not_ses_xml_is_kept_as_text(fake, context):
    fake.fail("SendEmail", 502, body=b"<html><body>Bad Gateway</body></html>")
    failed = await failure(ses(fake, context, None), message())
    assert failed.cls == "provider"
    assert failed.status_info == "ses: HTTP 502: <html><body>Bad Gateway</body></html>"


async def test_a_wrong_access_key_gets_the_fakes_401_shape_and_is_provider(fake, context):
    settings = Settings.parse({"region": "eu-west-1", "access_key": "AKIDOTHER", "secret_key": "s"})
    failed = await failure(SesProvider(settings, context), message())
    assert failed.cls == "provider" and failed.status_info.startswith("ses: HTTP 403 InvalidClientTokenId: ")


async def test_network_failure_is_provider():
    ctx = Context(base_urls={"ses": "http://127.0.0.1:9"})
    try:
        settings = Settings.parse({"region": "eu-west-1", "access_key": "AK", "secret_key": "s"})
        failed = await failure(SesProvider(settings, ctx), message())
    finally:
        await ctx.aclose()
    assert failed.cls == "provider" and failed.status_info.startswith("ses: ConnectError ")


# ---------------------------------------------------------------- moto's server mode: the real shapes


@pytest.fixture(scope="module")
def moto_url():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _moto(url: str, path: str, data: bytes = b"") -> None:
    # text/plain: werkzeug reads a form-encoded body as a form and moto would see no data
    request = urllib.request.Request(url + path, data=data, method="POST", headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(request).read()


@pytest.fixture
def moto_key(moto_url):
    """A fresh moto with an IAM user allowed ses:*, the sender verified and a configuration set;
    then moto checks every request's signature against that user's key (botocore's signer)."""
    _moto(moto_url, "/moto-api/reset")
    boot = dict(endpoint_url=moto_url, region_name="eu-west-1", aws_access_key_id="boot", aws_secret_access_key="boot")
    iam = boto3.client("iam", **boot)
    iam.create_user(UserName="postroom")
    iam.put_user_policy(UserName="postroom", PolicyName="ses", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ses:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="postroom")["AccessKey"]
    client = boto3.client("ses", **boot)
    client.verify_email_identity(EmailAddress="noreply@acme.test")
    client.create_configuration_set(ConfigurationSet={"Name": SET})
    _moto(moto_url, "/moto-api/reset-auth", b"0")
    try:
        yield key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        _moto(moto_url, "/moto-api/reset-auth", b"inf")


def moto_sent():
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    return ses_backends[DEFAULT_ACCOUNT_ID]["eu-west-1"].sent_messages


@pytest.fixture
async def moto_context(moto_url):
    ctx = Context(base_urls={"ses": moto_url})
    yield ctx
    await ctx.aclose()


def moto_provider(key, context, secret: str | None = None) -> SesProvider:
    settings = Settings.parse({"region": "eu-west-1", "access_key": key[0], "secret_key": secret or key[1]})
    return SesProvider(settings, context, INTEGRATION)


async def test_moto_accepts_send_email_signed_by_us(moto_key, moto_context):
    sent = await moto_provider(moto_key, moto_context).send(message(cc=("c@example.com",), bcc=("b@example.com",)))
    [stored] = moto_sent()
    assert stored.id == sent.provider_message_id
    assert (stored.source, stored.subject, stored.body) == ("Acme <noreply@acme.test>", "Hi Jane", "<p>Code X1</p>")
    assert stored.destinations == {"ToAddresses": ["jane@example.com"], "CcAddresses": ["c@example.com"],
                                   "BccAddresses": ["b@example.com"]}


async def test_moto_accepts_send_raw_email_with_every_destination(moto_key, moto_context):
    msg = message(cc=("c@example.com",), bcc=("b@example.com",), attachments=(Attachment("invoice.pdf", PDF),))
    sent = await moto_provider(moto_key, moto_context).send(msg)
    [stored] = moto_sent()
    assert stored.id == sent.provider_message_id
    assert stored.destinations[:3] == ["jane@example.com", "c@example.com", "b@example.com"]
    raw = email.message_from_string(stored.raw_data, policy=email.policy.default)
    assert raw["X-Message-ID"] == msg.message_id and raw["Bcc"] is None


async def test_moto_refuses_an_unverified_sender_as_provider(moto_key, moto_context):
    failed = await failure(moto_provider(moto_key, moto_context), message(from_address="other@acme.test"))
    assert failed.cls == "provider"
    assert failed.status_info.startswith("ses: HTTP 400 MessageRejected: ") and "other@acme.test" in failed.status_info
    assert moto_sent() == []


async def test_moto_refuses_a_wrong_secret_by_checking_the_signature(moto_key, moto_context):
    failed = await failure(moto_provider(moto_key, moto_context, secret="not-the-secret"), message())
    assert failed.cls == "provider"
    assert failed.status_info.startswith("ses: HTTP 403 SignatureDoesNotMatch: ")


async def test_moto_lists_the_configuration_set(moto_key, moto_context):
    provider = moto_provider(moto_key, moto_context)
    assert await provider.configuration_set() == SET
    other = SesProvider(provider.settings, moto_context, "no-such-integration")
    assert await other.configuration_set() is None
