"""A broker with a password file written by Debian's mosquitto_passwd and a Mosquitto ACL, tried
with paho-mqtt (over TLS with `tls_set` and over plain TCP) and with a SCRAM-SHA-512 client
written here from RFC 5802 on a raw socket, so nothing of the broker's own code checks it.
Every refusal asserts its reason code."""

import base64
import hashlib
import hmac
import os
import pathlib
import socket
import subprocess
import tempfile
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conftest import CERTIFICATES, Broker, runtimes, wait_until

USERS = {"alice": "wonderland", "bob": "builder"}

ACL = """\
# Mosquitto's acl_file format.
user alice
topic readwrite public/#
topic read private/alice/#

user bob
topic write public/#
topic write private/alice/#
topic deny public/secret

pattern readwrite clients/%u/#
"""


@pytest.fixture(scope="module", params=runtimes())
def broker(request):
    files = tempfile.TemporaryDirectory(prefix="mqtt-e2e-security-")
    passwords = pathlib.Path(files.name) / "passwords"
    for index, (user, password) in enumerate(USERS.items()):
        create = ["-c"] if index == 0 else []
        subprocess.run(["mosquitto_passwd", *create, "-b", str(passwords), user, password],
                       check=True, capture_output=True)
    acl = pathlib.Path(files.name) / "acl"
    acl.write_text(ACL)
    broker = Broker(request.param, ["--password-file", str(passwords), "--acl-file", str(acl)])
    yield broker
    alive = broker.process.poll() is None
    broker.stop()
    files.cleanup()
    assert alive, f"broker ({broker.runtime}) died during the tests:\n{broker.logs()}"
    assert "panicked" not in broker.logs(), broker.logs()


def paho_client(version, user=None, password=None):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=version)
    if user is not None:
        client.username_pw_set(user, password)
    return client


def connect_result(broker, version, user=None, password=None):
    """The reason code of the CONNACK paho gets."""
    client = paho_client(version, user, password)
    result = {}
    done = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        result["code"] = reason_code.value
        done.set()

    client.on_connect = on_connect
    client.on_connect_fail = lambda client, userdata: done.set()
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    assert done.wait(10), "no CONNACK"
    client.loop_stop()
    client.disconnect()
    return result.get("code")


def test_password_file_from_mosquitto_passwd(broker):
    for version in (mqtt.MQTTv311, mqtt.MQTTv5):
        assert connect_result(broker, version, "alice", "wonderland") == 0
    # v5: 0x86 bad user name or password, 0x87 not authorized; 3.1.1: return codes 4 and 5.
    assert connect_result(broker, mqtt.MQTTv5, "alice", "wrong") == 0x86
    assert connect_result(broker, mqtt.MQTTv5, "mallory", "wonderland") == 0x86
    assert connect_result(broker, mqtt.MQTTv5) == 0x87
    # paho reports 3.1.1 return codes as v5 reason codes; the bytes on the wire say 4 and 5.
    assert connect_result(broker, mqtt.MQTTv311, "alice", "wrong") == 0x86
    assert v3_return_code(broker, "alice", "wrong") == 4
    assert v3_return_code(broker, None, None) == 5
    assert v3_return_code(broker, "alice", "wonderland") == 0


def v3_return_code(broker, user, password):
    """The return code of a 3.1.1 CONNACK, read off the socket."""
    flags, payload = 0x02, text(f"v3-{os.getpid()}")
    if user is not None:
        flags |= 0xC0
        payload += text(user) + text(password)
    header = text("MQTT") + bytes([4, flags]) + (60).to_bytes(2, "big")
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
        sock.sendall(packet(0x10, header + payload))
        kind, body = read_packet(sock)
    assert kind == 0x20 and len(body) == 2, (kind, body)
    return body[1]


def connected(broker, user, tls=False, version=mqtt.MQTTv5):
    client = paho_client(version, user, USERS[user])
    port = broker.port
    if tls:
        client.tls_set(ca_certs=str(CERTIFICATES.ca))
        port = broker.tls_port
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert wait_until(client.is_connected, 10), f"{user} could not connect"
    return client


def subscribe_codes(client, filters):
    """The SUBACK reason codes for `filters`."""
    result = {}
    done = threading.Event()

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        result["codes"] = [code.value for code in reason_codes]
        done.set()

    client.on_subscribe = on_subscribe
    client.subscribe([(topic, 1) for topic in filters])
    assert done.wait(10), "no SUBACK"
    return result["codes"]


def test_acl_over_tls_with_paho(broker):
    alice = connected(broker, "alice", tls=True)
    bob = connected(broker, "bob")
    received = []
    alice.on_message = lambda client, userdata, message: received.append(
        (message.topic, message.payload))
    # `#` and `private/#` are more than alice may read; `public/#` is hers whole.
    assert subscribe_codes(alice, ["#", "private/#", "public/#", "private/alice/#"]) == [
        0x87, 0x87, 1, 1]

    acks = {}
    bob.on_publish = lambda client, userdata, mid, reason_code, properties: acks.__setitem__(
        mid, reason_code.value)
    allowed = bob.publish("public/news", b"from bob", qos=1)
    to_alice = bob.publish("private/alice/inbox", b"for alice", qos=1)
    # Bob may write only what his grants cover: the PUBACK says 0x87.
    refused = bob.publish("private/bob/diary", b"nobody", qos=1)
    assert wait_until(lambda: len(acks) == 3, 10), acks
    assert acks[allowed.mid] == 0 and acks[to_alice.mid] == 0
    assert acks[refused.mid] == 0x87
    # `public/secret` matches alice's `public/#`, but the ACL takes it from bob's writes.
    secret = bob.publish("public/secret", b"hidden", qos=1)
    assert wait_until(lambda: secret.mid in acks, 10)
    assert acks[secret.mid] == 0x87
    assert wait_until(lambda: len(received) == 2, 10), received
    assert sorted(received) == [("private/alice/inbox", b"for alice"), ("public/news", b"from bob")]
    # A 3.1.1 client refused by the ACL is acknowledged and stays connected, as with Mosquitto.
    bob3 = connected(broker, "bob", version=mqtt.MQTTv311)
    info = bob3.publish("private/bob/diary", b"nobody", qos=1)
    info.wait_for_publish(10)
    assert bob3.is_connected()
    for client in (alice, bob, bob3):
        client.loop_stop()
        client.disconnect()


def test_patterns_name_the_client(broker):
    alice = connected(broker, "alice")
    assert subscribe_codes(alice, ["clients/alice/#", "clients/bob/#"]) == [1, 0x87]
    alice.loop_stop()
    alice.disconnect()


# ----- SCRAM-SHA-512 (RFC 5802) over MQTT 5 enhanced authentication, on a raw socket ----------

METHOD = "SCRAM-SHA-512"


def varint(value):
    out = bytearray()
    while True:
        byte = value % 128
        value //= 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def text(value):
    data = value.encode() if isinstance(value, str) else value
    return len(data).to_bytes(2, "big") + data


def packet(kind, body):
    return bytes([kind]) + varint(len(body)) + body


def auth_properties(data):
    properties = b"\x15" + text(METHOD) + b"\x16" + text(data)
    return varint(len(properties)) + properties


def connect_packet(client_id, data):
    header = text("MQTT") + bytes([5, 0x02]) + (60).to_bytes(2, "big")
    return packet(0x10, header + auth_properties(data) + text(client_id))


def auth_packet(reason, data):
    return packet(0xF0, bytes([reason]) + auth_properties(data))


def read_packet(sock):
    def exactly(count):
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    kind = exactly(1)[0]
    length, shift = 0, 0
    while True:
        byte = exactly(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return kind, exactly(length)


# Sizes of the v5 properties a CONNACK or AUTH may carry.
FIXED = {1: [0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A], 2: [0x13, 0x21, 0x22, 0x23],
         4: [0x02, 0x11, 0x18, 0x27]}


def parse_properties(data):
    length, shift, at = 0, 0, 0
    while True:
        byte = data[at]
        at += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    end, found = at + length, {}
    while at < end:
        ident = data[at]
        at += 1
        size = next((size for size, idents in FIXED.items() if ident in idents), None)
        if size is not None:
            found[ident] = data[at:at + size]
            at += size
        else:
            size = int.from_bytes(data[at:at + 2], "big")
            found[ident] = data[at + 2:at + 2 + size]
            at += 2 + size
    return found


def h(key, message):
    return hmac.new(key, message, hashlib.sha512).digest()


class ScramClient:
    """The client side of RFC 5802 with SHA-512."""

    def __init__(self, user, password):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n={user},r={self.nonce}"

    def first(self):
        return ("n,," + self.first_bare).encode()

    def final(self, server_first):
        server_first = server_first.decode()
        fields = dict(item.split("=", 1) for item in server_first.split(","))
        assert fields["r"].startswith(self.nonce)
        salted = hashlib.pbkdf2_hmac("sha512", self.password, base64.b64decode(fields["s"]),
                                     int(fields["i"]))
        client_key = h(salted, b"Client Key")
        stored_key = hashlib.sha512(client_key).digest()
        without_proof = f"c={base64.b64encode(b'n,,').decode()},r={fields['r']}"
        auth_message = ",".join([self.first_bare, server_first, without_proof]).encode()
        proof = bytes(a ^ b for a, b in zip(client_key, h(stored_key, auth_message)))
        self.server_signature = h(h(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def check_server_final(self, server_final):
        assert server_final == b"v=" + base64.b64encode(self.server_signature)


def scram_connect(broker, user, password):
    """Runs the exchange; the CONNACK reason code, and the socket (for more)."""
    sock = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
    client = ScramClient(user, password)
    sock.sendall(connect_packet(f"scram-{user}-{os.getpid()}", client.first()))
    kind, body = read_packet(sock)
    assert kind == 0xF0 and body[0] == 0x18, (kind, body)
    properties = parse_properties(body[1:])
    assert properties[0x15] == METHOD.encode()
    sock.sendall(auth_packet(0x18, client.final(properties[0x16])))
    kind, body = read_packet(sock)
    assert kind == 0x20, (kind, body)
    reason = body[1]
    if reason == 0:
        properties = parse_properties(body[2:])
        assert properties[0x15] == METHOD.encode()
        client.check_server_final(properties[0x16])
    return reason, sock


def test_scram_sha_512_with_a_client_written_from_rfc_5802(broker):
    reason, sock = scram_connect(broker, "alice", USERS["alice"])
    assert reason == 0
    # Re-authentication (AUTH 0x19) on the live connection, same exchange, AUTH 0x00 at the end.
    client = ScramClient("alice", USERS["alice"])
    sock.sendall(auth_packet(0x19, client.first()))
    kind, body = read_packet(sock)
    assert kind == 0xF0 and body[0] == 0x18, (kind, body)
    sock.sendall(auth_packet(0x18, client.final(parse_properties(body[1:])[0x16])))
    kind, body = read_packet(sock)
    assert kind == 0xF0 and body[0] == 0x00, (kind, body)
    client.check_server_final(parse_properties(body[1:])[0x16])
    # Still connected: PINGREQ gets PINGRESP.
    sock.sendall(b"\xc0\x00")
    assert read_packet(sock) == (0xD0, b"")
    sock.close()

    reason, sock = scram_connect(broker, "alice", "not her password")
    assert reason == 0x86
    sock.close()
    # An unknown user gets a plausible challenge, then the same refusal as a wrong password.
    reason, sock = scram_connect(broker, "mallory", "anything")
    assert reason == 0x86
    sock.close()
