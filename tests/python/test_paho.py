"""End-to-end tests of the real broker with Eclipse paho-mqtt (>= 2, MQTT 5): properties,
message expiry, shared subscriptions, QoS 2 and delayed wills. See conftest.py for how the
broker is started and which runtimes are tested."""

import itertools
import os
import queue
import socket
import threading
import time

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from conftest import CERTIFICATES, wait_until

assert int(paho.mqtt.__version__.split(".")[0]) >= 2, "these tests need paho-mqtt >= 2"

WAIT = 5.0  # anything that should happen
QUIET = 0.3  # how long we watch for something that must not happen
_ids = itertools.count()


def unique(prefix):
    return f"{prefix}-{os.getpid()}-{next(_ids)}"


class Peer:
    """A paho MQTT 5 client with its network loop on a thread, and queues of what it got."""

    def __init__(self, broker, client_id=None, clean_start=True, session_expiry=None,
                 will=None, tls=False, websocket=False):
        self.id = client_id or unique("paho")
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.id,
                                  protocol=mqtt.MQTTv5, reconnect_on_failure=False,
                                  transport="websockets" if websocket else "tcp")
        self.messages = queue.Queue()
        self.subacks = {}
        self.connack = queue.Queue()
        self.disconnected = threading.Event()
        self.client.on_connect = lambda c, u, flags, rc, props: self.connack.put((flags, rc))
        self.client.on_message = lambda c, u, message: self.messages.put(message)
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = lambda c, u, flags, rc, props: self.disconnected.set()
        if will is not None:
            topic, payload, properties = will
            self.client.will_set(topic, payload, qos=1, properties=properties)
        properties = Properties(PacketTypes.CONNECT)
        if session_expiry is not None:
            properties.SessionExpiryInterval = session_expiry
        port = broker.port
        if tls:
            self.client.tls_set(ca_certs=str(CERTIFICATES.ca))
            port = broker.tls_port
        if websocket:
            port = broker.ws_port
        self.client.connect("127.0.0.1", port, keepalive=30, clean_start=clean_start,
                            properties=properties)
        self.client.loop_start()
        try:
            flags, rc = self.connack.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"{self.id}: no CONNACK within {WAIT} s") from None
        assert not rc.is_failure, f"{self.id}: CONNACK {rc}"
        self.session_present = flags.session_present

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.subacks[mid] = reason_codes

    def subscribe(self, topic, qos, properties=None):
        result, mid = self.client.subscribe(topic, qos=qos, properties=properties)
        assert result == mqtt.MQTT_ERR_SUCCESS
        assert wait_until(lambda: mid in self.subacks, WAIT), f"{self.id}: no SUBACK"
        codes = [code.value for code in self.subacks[mid]]
        assert codes == [qos], f"{self.id}: SUBACK {self.subacks[mid]} for {topic}"

    def publish(self, topic, payload, qos=1, retain=False, properties=None, timeout=WAIT):
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(timeout=timeout)
        assert info.is_published(), f"{self.id}: publish to {topic} not acknowledged"

    def recv(self, timeout=WAIT):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def collect(self, count):
        got = []
        while len(got) < count:
            message = self.recv()
            assert message is not None, f"{self.id}: got {len(got)} of {count} messages"
            got.append(message)
        return got

    def drain(self, quiet=QUIET):
        """Everything that arrives until nothing has for `quiet` seconds."""
        got = []
        while (message := self.recv(quiet)) is not None:
            got.append(message)
        return got

    def assert_quiet(self, why):
        message = self.recv(QUIET)
        assert message is None, f"{self.id}: unexpected message ({why}): {message.topic}"

    def disconnect(self, reason=0):
        self.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=reason))
        assert self.disconnected.wait(WAIT), f"{self.id}: DISCONNECT not completed"
        self.client.loop_stop()

    def drop(self):
        """Closes the TCP connection without DISCONNECT; returns when the FIN was sent."""
        sock = self.client.socket()
        sock.shutdown(socket.SHUT_RDWR)
        sent = time.monotonic()
        self.client.loop_stop()
        return sent


def test_v5_properties_round_trip(broker):
    topic = unique("props")
    subscriber = Peer(broker)
    sub_props = Properties(PacketTypes.SUBSCRIBE)
    sub_props.SubscriptionIdentifier = 7
    subscriber.subscribe(topic, 1, properties=sub_props)
    publisher = Peer(broker)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("a", "1"), ("b", "2"), ("a", "3")]
    props.ContentType = "application/json"
    props.ResponseTopic = f"{topic}/reply"
    props.CorrelationData = b"\x00\x01corr"
    props.PayloadFormatIndicator = 1
    props.MessageExpiryInterval = 60
    publisher.publish(topic, b'{"x": 1}', qos=1, properties=props)

    message = subscriber.recv()
    assert message is not None, "the message was not delivered"
    got = message.properties
    assert message.payload == b'{"x": 1}'
    # The server keeps the order of user properties (MQTT 5 §3.3.2.3.7).
    assert got.UserProperty == [("a", "1"), ("b", "2"), ("a", "3")]
    assert got.ContentType == "application/json"
    assert got.ResponseTopic == f"{topic}/reply"
    assert got.CorrelationData == b"\x00\x01corr"
    assert got.PayloadFormatIndicator == 1
    # What is left of the expiry interval (§3.3.2.3.3): at most what was sent.
    assert 0 < got.MessageExpiryInterval <= 60
    assert got.SubscriptionIdentifier == [7]

    # Request/response: the responder answers on the response topic with the correlation data.
    requester = Peer(broker)
    requester.subscribe(got.ResponseTopic, 1)
    answer = Properties(PacketTypes.PUBLISH)
    answer.CorrelationData = got.CorrelationData
    subscriber.publish(got.ResponseTopic, b"reply", qos=1, properties=answer)
    reply = requester.recv()
    assert reply is not None and reply.payload == b"reply"
    assert reply.properties.CorrelationData == b"\x00\x01corr"
    for peer in (subscriber, publisher, requester):
        peer.disconnect()


def test_message_expiry(broker):
    """Expired messages are neither sent to new subscribers (retained) nor from an offline
    session's queue (MQTT 5 §3.3.2.3.3); unexpired ones are."""
    base = unique("expiry")
    short = Properties(PacketTypes.PUBLISH)
    short.MessageExpiryInterval = 1
    long = Properties(PacketTypes.PUBLISH)
    long.MessageExpiryInterval = 300

    offline_id = unique("offline")
    offline = Peer(broker, client_id=offline_id, clean_start=False, session_expiry=60)
    offline.subscribe(f"{base}/queue", 1)
    offline.disconnect()

    publisher = Peer(broker)
    publisher.publish(f"{base}/retained/short", b"short", retain=True, properties=short)
    publisher.publish(f"{base}/retained/long", b"long", retain=True, properties=long)
    publisher.publish(f"{base}/queue", b"short", properties=short)
    publisher.publish(f"{base}/queue", b"long", properties=long)
    time.sleep(1.2)

    late = Peer(broker)
    late.subscribe(f"{base}/retained/#", 1)
    got = late.drain()
    assert [m.payload for m in got] == [b"long"], "only the unexpired retained message"
    assert got[0].retain
    assert 0 < got[0].properties.MessageExpiryInterval <= 299

    resumed = Peer(broker, client_id=offline_id, clean_start=False, session_expiry=60)
    assert resumed.session_present
    got = resumed.drain()
    assert [m.payload for m in got] == [b"long"], "only the unexpired queued message"
    for peer in (publisher, late, resumed):
        peer.disconnect()


def test_shared_subscription(broker):
    """`$share/g/t` with two members: each message goes to exactly one, both get some
    (MQTT 5 §4.8.2); a plain subscriber of `t` still gets every message."""
    topic = unique("shared")
    members = [Peer(broker) for _ in range(2)]
    for member in members:
        member.subscribe(f"$share/g/{topic}", 1)
    plain = Peer(broker)
    plain.subscribe(topic, 1)
    publisher = Peer(broker)
    sent = [f"m{n}".encode() for n in range(20)]
    for payload in sent:
        publisher.publish(topic, payload, qos=1)

    per_member = [[m.payload for m in member.drain()] for member in members]
    everything = sorted(itertools.chain(*per_member))
    assert everything == sorted(sent), f"each message exactly once in the group: {per_member}"
    assert all(per_member), f"both members got some: {per_member}"
    assert [m.payload for m in plain.drain()] == sent
    for peer in (*members, plain, publisher):
        peer.disconnect()


def test_qos2_exactly_once(broker):
    topic = unique("qos2")
    subscribers = [Peer(broker) for _ in range(3)]
    for subscriber in subscribers:
        subscriber.subscribe(topic, 2)
    publishers = [Peer(broker) for _ in range(2)]
    for n in range(10):
        for p, publisher in enumerate(publishers):
            publisher.publish(topic, f"{p}:{n}".encode(), qos=2)
    for subscriber in subscribers:
        got = subscriber.drain()
        assert all(m.qos == 2 for m in got)
        for p in range(len(publishers)):
            from_p = [m.payload.decode() for m in got if m.payload.startswith(f"{p}:".encode())]
            assert from_p == [f"{p}:{n}" for n in range(10)], (
                f"{subscriber.id}: each message of publisher {p} once, in order")
    for peer in (*subscribers, *publishers):
        peer.disconnect()


def test_tls_and_plain_clients_exchange_qos_1_and_2(broker):
    topic = unique("tls")
    over_tls = Peer(broker, tls=True)
    plain = Peer(broker)
    over_tls.subscribe(topic + "/to-tls", 2)
    plain.subscribe(topic + "/to-plain", 2)
    large = bytes(range(256)) * 300  # 76,800 bytes: several TLS records
    for qos in (1, 2):
        plain.publish(topic + "/to-tls", large, qos=qos)
        over_tls.publish(topic + "/to-plain", f"qos {qos}".encode(), qos=qos)
    got = over_tls.drain()
    assert [(m.payload, m.qos) for m in got] == [(large, 1), (large, 2)]
    got = plain.drain()
    assert [(m.payload, m.qos) for m in got] == [(b"qos 1", 1), (b"qos 2", 2)]
    for peer in (over_tls, plain):
        peer.disconnect()


def test_websocket_and_plain_clients_exchange_qos_0_and_1_and_large_messages(broker):
    topic = unique("ws")
    over_ws = Peer(broker, websocket=True)
    plain = Peer(broker)
    over_ws.subscribe(topic + "/to-ws", 1)
    plain.subscribe(topic + "/to-plain", 1)
    for qos in (0, 1):
        plain.publish(topic + "/to-ws", f"to ws, qos {qos}".encode(), qos=qos)
        over_ws.publish(topic + "/to-plain", f"to plain, qos {qos}".encode(), qos=qos)
    got = over_ws.drain()
    assert [(m.payload, m.qos) for m in got] == [(b"to ws, qos 0", 0), (b"to ws, qos 1", 1)]
    got = plain.drain()
    assert [(m.payload, m.qos) for m in got] == [(b"to plain, qos 0", 0), (b"to plain, qos 1", 1)]
    # 70 KB spans several frames and reads; 16 MB is far past any single buffer on the way.
    for size in (70_000, 16 * 1024 * 1024):
        large = bytes(range(256)) * (size // 256)
        plain.publish(topic + "/to-ws", large, qos=1, timeout=60)
        message = over_ws.recv(timeout=60)
        assert message is not None, f"no {size}-byte message over WebSocket"
        assert message.payload == large
    for peer in (over_ws, plain):
        peer.disconnect()


def will_properties(delay):
    properties = Properties(PacketTypes.WILLMESSAGE)
    properties.WillDelayInterval = delay
    properties.UserProperty = [("why", "will")]
    return properties


def test_will_delay(broker):
    """A will with Will Delay Interval 1 s is published once the delay has passed since the
    connection dropped, never before (MQTT 5 §3.1.3.2.2), with its properties, and once."""
    topic = unique("will-delay")
    watcher = Peer(broker)
    watcher.subscribe(topic, 1)
    dying = Peer(broker, session_expiry=30, will=(topic, b"late bye", will_properties(1)))
    dropped = dying.drop()
    will = watcher.recv(timeout=1 + WAIT)
    arrived = time.monotonic() - dropped
    assert will is not None, "the delayed will was not published"
    assert will.payload == b"late bye"
    assert will.properties.UserProperty == [("why", "will")]
    assert arrived >= 0.9, f"will published {arrived:.2f} s after the drop, before its 1 s delay"
    # A marker published after the will comes next: no second copy came in between.
    publisher = Peer(broker)
    publisher.publish(topic, b"marker")
    publisher.disconnect()
    after = watcher.recv()
    assert after is not None and after.payload == b"marker", "the marker after the will"
    watcher.assert_quiet("the will is published once")
    watcher.disconnect()


def test_will_delay_cancelled_by_reconnect(broker):
    """Reconnecting within the will delay means the will is not published (§3.1.3.2.2). A
    second client that drops later with the same delay and stays away marks the moment the
    first will would have been due: its will arrives, the cancelled one never does."""
    topic = unique("will-cancel")
    watcher = Peer(broker)
    watcher.subscribe(f"{topic}/#", 1)
    client_id = unique("returning")
    dying = Peer(broker, client_id=client_id, clean_start=False, session_expiry=30,
                 will=(f"{topic}/returning", b"should not", will_properties(1)))
    dying.drop()
    back = Peer(broker, client_id=client_id, clean_start=False, session_expiry=30)
    assert back.session_present
    marker = Peer(broker, session_expiry=30,
                  will=(f"{topic}/marker", b"marker", will_properties(1)))
    marker.drop()
    got = watcher.recv(timeout=1 + WAIT)
    assert got is not None, "the marker client's will was not published"
    assert (got.topic, got.payload) == (f"{topic}/marker", b"marker"), (
        f"the will was published despite the reconnect: {got.topic}")
    watcher.assert_quiet("the cancelled will is not published after the marker")
    back.disconnect()
    watcher.disconnect()


def test_disconnect_with_will_message(broker):
    """DISCONNECT with reason 0x04 publishes the will (MQTT 5 §3.14.2.1); 0x00 does not."""
    topic = unique("will-04")
    watcher = Peer(broker)
    watcher.subscribe(f"{topic}/#", 1)
    Peer(broker, will=(f"{topic}/normal", b"no", None)).disconnect(reason=0x00)
    Peer(broker, will=(f"{topic}/with-will", b"yes", None)).disconnect(reason=0x04)
    got = watcher.drain()
    assert [(m.topic, m.payload) for m in got] == [(f"{topic}/with-will", b"yes")]
    watcher.disconnect()
