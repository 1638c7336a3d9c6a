"""Amazon SNS at the edge of the world (engagement-contract 6, fixture): a signing key with its
self-signed certificate, SNS messages signed with it as SNS signs them (SignatureVersion 1 or 2),
and a local HTTP server standing in for the `sns.<region>.amazonaws.com` host, reached through
the POSTROOM_SNS_BASE_URL test hook. The server answers a GET of any `*.pem` path with the
certificate and any other GET (a SubscribeURL) with SNS's confirmation XML, and records them."""

from __future__ import annotations

import base64
import datetime
import json
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from starlette.requests import Request
from starlette.responses import Response

REGION = "eu-west-1"
HOST = f"sns.{REGION}.amazonaws.com"
CERT_URL = f"https://{HOST}/SimpleNotificationService-0000000000000000000000.pem"
TOPIC = f"arn:aws:sns:{REGION}:123456789012:notifuse-ses-topic"


def _certificate(key) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def _string_to_sign(message: dict) -> bytes:
    if message["Type"] == "Notification":
        names = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
    else:
        names = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
    return "".join(f"{n}\n{message[n]}\n" for n in names if n in message).encode()


class SnsFake:
    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.pem = _certificate(self.key)
        self.gets: list[str] = []      # paths fetched, in order
        self.url = ""

    def sign(self, message: dict, version: str = "2", cert_url: str = CERT_URL) -> dict:
        out = {**message, "SignatureVersion": version, "SigningCertURL": cert_url}
        algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
        out["Signature"] = base64.b64encode(self.key.sign(_string_to_sign(out), padding.PKCS1v15(),
                                                          algorithm)).decode()
        return out

    def notification(self, ses_event: dict, topic: str = TOPIC, message_id: str | None = None, **changes) -> dict:
        message = {"Type": "Notification", "MessageId": message_id or str(uuid.uuid4()), "TopicArn": topic,
                   "Message": json.dumps(ses_event), "Timestamp": "2026-01-01T00:00:00.000Z",
                   "UnsubscribeURL": f"https://{HOST}/?Action=Unsubscribe"}
        return self.sign(message | changes)

    def confirmation(self, topic: str = TOPIC, subscribe_url: str | None = None) -> dict:
        message = {"Type": "SubscriptionConfirmation", "MessageId": str(uuid.uuid4()), "TopicArn": topic,
                   "Token": "2336412f37fb687f5d51e6e2425",
                   "Message": "You have chosen to subscribe to the topic. To confirm, visit the SubscribeURL.",
                   "SubscribeURL": subscribe_url or f"https://{HOST}/?Action=ConfirmSubscription&Token=2336",
                   "Timestamp": "2026-01-01T00:00:00.000Z"}
        return self.sign(message)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        self.gets.append(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        if request.url.path.endswith(".pem"):
            response = Response(self.pem, media_type="application/x-x509-ca-cert")
        else:
            response = Response("<ConfirmSubscriptionResponse><ConfirmSubscriptionResult><SubscriptionArn>"
                                f"{TOPIC}:sub</SubscriptionArn></ConfirmSubscriptionResult>"
                                "</ConfirmSubscriptionResponse>", media_type="text/xml")
        await response(scope, receive, send)
