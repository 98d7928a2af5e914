//! End-to-end tests of the real `mqtt-broker` binary with rumqttc (MQTT 3.1.1 and 5) clients,
//! on every runtime this machine runs (`io-uring` when available, `epoll`, `tokio`), each broker
//! with two shards so that traffic crosses shards.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{broker_for, unique, v5_will, Binary, Broker};
use mqtt_broker::broker::home_shard;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::task::JoinHandle;

/// How long anything that should happen may take.
const WAIT: Duration = Duration::from_secs(5);
/// How long we watch for something that must not happen (a duplicate, a will after DISCONNECT).
const QUIET: Duration = Duration::from_millis(300);

/// A rumqttc client whose event loop runs on its own task: publishes and the other events come
/// out of two channels; the loop stops (and the socket closes) at its first error.
macro_rules! client_wrapper {
    ($event:ty, $error:ty, $publish:ty, $incoming:path, $client:ty, $options:ty) => {
        pub struct Client {
            pub id: String,
            pub client: $client,
            publishes: UnboundedReceiver<$publish>,
            events: UnboundedReceiver<Result<$event, $error>>,
            task: JoinHandle<()>,
        }

        #[allow(dead_code)] // each protocol version uses its own part
        impl Client {
            fn spawn(options: $options) -> Client {
                let id = options.client_id();
                let (client, mut eventloop) = <$client>::new(options, 128);
                let (publish_tx, publishes) = unbounded_channel();
                let (event_tx, events) = unbounded_channel();
                let task = tokio::spawn(async move {
                    loop {
                        match eventloop.poll().await {
                            Ok(Event::Incoming($incoming(publish))) => {
                                let _ = publish_tx.send(publish);
                            }
                            Ok(event) => {
                                let _ = event_tx.send(Ok(event));
                            }
                            Err(error) => {
                                let _ = event_tx.send(Err(error));
                                break;
                            }
                        }
                    }
                });
                Client {
                    id,
                    client,
                    publishes,
                    events,
                    task,
                }
            }

            /// The next event that `want` picks out; panics on a loop error or after `WAIT`.
            async fn next_event(&mut self, what: &str, want: impl Fn(&$event) -> bool) -> $event {
                let deadline = tokio::time::Instant::now() + WAIT;
                loop {
                    match tokio::time::timeout_at(deadline, self.events.recv()).await {
                        Ok(Some(Ok(event))) if want(&event) => return event,
                        Ok(Some(Ok(_))) => {}
                        Ok(Some(Err(error))) => {
                            panic!("{}: connection failed waiting for {what}: {error:?}", self.id)
                        }
                        Ok(None) => panic!("{}: event loop ended waiting for {what}", self.id),
                        Err(_) => panic!("{}: no {what} within {WAIT:?}", self.id),
                    }
                }
            }

            /// The error that ended the event loop, skipping other events; `None` if the loop
            /// is still running after `within`.
            pub async fn closed(&mut self, within: Duration) -> Option<$error> {
                let deadline = tokio::time::Instant::now() + within;
                loop {
                    match tokio::time::timeout_at(deadline, self.events.recv()).await {
                        Ok(Some(Ok(_))) => {}
                        Ok(Some(Err(error))) => return Some(error),
                        Ok(None) | Err(_) => return None,
                    }
                }
            }

            /// The next message delivered, if one comes within `within`.
            pub async fn recv(&mut self, within: Duration) -> Option<$publish> {
                tokio::time::timeout(within, self.publishes.recv())
                    .await
                    .ok()
                    .flatten()
            }

            /// Exactly the next `count` messages, each within `WAIT` of the previous one.
            pub async fn collect(&mut self, count: usize) -> Vec<$publish> {
                let mut got = Vec::with_capacity(count);
                while got.len() < count {
                    match self.recv(WAIT).await {
                        Some(publish) => got.push(publish),
                        None => panic!(
                            "{}: got {} of {count} messages, then nothing for {WAIT:?}: {got:?}",
                            self.id,
                            got.len()
                        ),
                    }
                }
                got
            }

            /// Panics if a message arrives within `QUIET`.
            pub async fn assert_quiet(&mut self, why: &str) {
                if let Some(publish) = self.recv(QUIET).await {
                    panic!("{}: unexpected message ({why}): {publish:?}", self.id);
                }
            }

            /// Publishes and waits until the broker acknowledged it (QoS 1 and 2) or it was
            /// written (QoS 0).
            pub async fn publish(
                &mut self,
                topic: &str,
                qos: QoS,
                retain: bool,
                payload: impl Into<Vec<u8>>,
            ) {
                let payload: Vec<u8> = payload.into();
                self.client
                    .publish(topic, qos, retain, payload)
                    .await
                    .expect("publish request");
                self.wait_published(qos).await;
            }

            /// Closes the TCP connection without sending DISCONNECT.
            pub async fn drop_connection(self) {
                self.task.abort();
                let _ = self.task.await;
            }

            /// Sends DISCONNECT, then waits for the broker to close the connection.
            pub async fn disconnect(mut self) {
                self.client.disconnect().await.expect("disconnect request");
                self.next_event("DISCONNECT written", |event| {
                    matches!(event, Event::Outgoing(Outgoing::Disconnect))
                })
                .await;
                if tokio::time::timeout(WAIT, &mut self.task).await.is_err() {
                    panic!("{}: broker kept the connection open after DISCONNECT", self.id);
                }
            }
        }
    };
}

/// rumqttc's MQTT 3.1.1 client.
mod v3 {
    use super::*;
    pub use rumqttc::{
        AsyncClient, ConnAck, ConnectReturnCode, ConnectionError, Event, Incoming, LastWill,
        MqttOptions, Outgoing, Publish, QoS, SubscribeReasonCode,
    };

    client_wrapper!(
        Event,
        ConnectionError,
        Publish,
        Incoming::Publish,
        AsyncClient,
        MqttOptions
    );

    pub fn options(port: u16, id: &str) -> MqttOptions {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        options
    }

    impl Client {
        /// Connects and returns the CONNACK; panics unless it accepts the connection.
        pub async fn connect_with(options: MqttOptions) -> (Client, ConnAck) {
            let mut client = Client::spawn(options);
            let event = client
                .next_event("CONNACK", |event| {
                    matches!(event, Event::Incoming(Incoming::ConnAck(_)))
                })
                .await;
            let Event::Incoming(Incoming::ConnAck(connack)) = event else {
                unreachable!()
            };
            assert_eq!(connack.code, ConnectReturnCode::Success, "{}", client.id);
            (client, connack)
        }

        pub async fn connect(port: u16, id: &str) -> Client {
            Client::connect_with(options(port, id)).await.0
        }

        /// Subscribes and checks that the SUBACK grants `qos`.
        pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
            self.client.subscribe(filter, qos).await.expect("subscribe");
            let event = self
                .next_event("SUBACK", |event| {
                    matches!(event, Event::Incoming(Incoming::SubAck(_)))
                })
                .await;
            let Event::Incoming(Incoming::SubAck(suback)) = event else {
                unreachable!()
            };
            assert_eq!(
                suback.return_codes,
                vec![SubscribeReasonCode::Success(qos)],
                "{}: SUBACK for {filter}",
                self.id
            );
        }

        /// Publishes `count` messages `0`, `1`, … without waiting in between, as fast as the
        /// client's in-flight window lets them go, and waits until the broker has acknowledged
        /// them all (PUBACK, or PUBCOMP at QoS 2).
        pub async fn publish_window(&mut self, topic: &str, qos: QoS, count: usize) {
            let client = self.client.clone();
            let topic = topic.to_string();
            let sending = tokio::spawn(async move {
                for n in 0..count {
                    client
                        .publish(&topic, qos, false, n.to_string())
                        .await
                        .expect("publish request");
                }
            });
            for _ in 0..count {
                self.wait_published(qos).await;
            }
            sending.await.expect("publishing task");
        }

        async fn wait_published(&mut self, qos: QoS) {
            match qos {
                QoS::AtMostOnce => {
                    self.next_event("PUBLISH written", |event| {
                        matches!(event, Event::Outgoing(Outgoing::Publish(_)))
                    })
                    .await
                }
                QoS::AtLeastOnce => {
                    self.next_event("PUBACK", |event| {
                        matches!(event, Event::Incoming(Incoming::PubAck(_)))
                    })
                    .await
                }
                QoS::ExactlyOnce => {
                    self.next_event("PUBCOMP", |event| {
                        matches!(event, Event::Incoming(Incoming::PubComp(_)))
                    })
                    .await
                }
            };
        }
    }

    pub fn topic(publish: &Publish) -> String {
        publish.topic.clone()
    }
}

/// rumqttc's MQTT 5 client.
mod v5 {
    use super::*;
    pub use rumqttc::v5::mqttbytes::v5::{
        ConnAck, ConnectReturnCode, DisconnectReasonCode, Packet, Publish, SubscribeReasonCode,
    };
    pub use rumqttc::v5::mqttbytes::QoS;
    pub use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
    pub use rumqttc::Outgoing;

    client_wrapper!(
        Event,
        ConnectionError,
        Publish,
        Packet::Publish,
        AsyncClient,
        MqttOptions
    );

    pub fn options(port: u16, id: &str) -> MqttOptions {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        options
    }

    impl Client {
        pub async fn connect_with(options: MqttOptions) -> (Client, ConnAck) {
            let mut client = Client::spawn(options);
            let event = client
                .next_event("CONNACK", |event| {
                    matches!(event, Event::Incoming(Packet::ConnAck(_)))
                })
                .await;
            let Event::Incoming(Packet::ConnAck(connack)) = event else {
                unreachable!()
            };
            assert_eq!(connack.code, ConnectReturnCode::Success, "{}", client.id);
            (client, connack)
        }

        pub async fn connect(port: u16, id: &str) -> Client {
            Client::connect_with(options(port, id)).await.0
        }

        pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
            self.client.subscribe(filter, qos).await.expect("subscribe");
            let event = self
                .next_event("SUBACK", |event| {
                    matches!(event, Event::Incoming(Packet::SubAck(_)))
                })
                .await;
            let Event::Incoming(Packet::SubAck(suback)) = event else {
                unreachable!()
            };
            assert_eq!(
                suback.return_codes,
                vec![SubscribeReasonCode::Success(qos)],
                "{}: SUBACK for {filter}",
                self.id
            );
        }

        async fn wait_published(&mut self, qos: QoS) {
            match qos {
                QoS::AtMostOnce => {
                    self.next_event("PUBLISH written", |event| {
                        matches!(event, Event::Outgoing(Outgoing::Publish(_)))
                    })
                    .await
                }
                QoS::AtLeastOnce => {
                    self.next_event("PUBACK", |event| {
                        matches!(event, Event::Incoming(Packet::PubAck(_)))
                    })
                    .await
                }
                QoS::ExactlyOnce => {
                    self.next_event("PUBCOMP", |event| {
                        matches!(event, Event::Incoming(Packet::PubComp(_)))
                    })
                    .await
                }
            };
        }

        /// The reason code of the DISCONNECT the broker sent, waiting up to `WAIT`; panics if
        /// the connection ends some other way or stays open.
        pub async fn server_disconnect(&mut self) -> DisconnectReasonCode {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                match tokio::time::timeout_at(deadline, self.events.recv()).await {
                    Ok(Some(Ok(Event::Incoming(Packet::Disconnect(disconnect))))) => {
                        return disconnect.reason_code
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(ConnectionError::MqttState(StateError::ServerDisconnect {
                        reason_code,
                        ..
                    })))) => return reason_code,
                    Ok(Some(Err(error))) => panic!(
                        "{}: connection ended without a DISCONNECT that rumqttc could read: \
                         {error:?} (rumqttc 0.25 waits for the property length byte after the \
                         reason code: it reads E0 01 8E as incomplete, E0 02 8E 00 it reads)",
                        self.id
                    ),
                    Ok(None) => panic!("{}: event loop ended without DISCONNECT", self.id),
                    Err(_) => panic!("{}: no DISCONNECT within {WAIT:?}", self.id),
                }
            }
        }
    }

    pub fn topic(publish: &Publish) -> String {
        String::from_utf8(publish.topic.to_vec()).expect("UTF-8 topic")
    }
}

/// One test per runtime for each listed test function `f(runtime)`.
/// One test per runtime for each listed test function `f(runtime)`, with its attributes.
macro_rules! runtime_tests {
    (@module $(#[$cfg:meta])* $module:ident, $runtime:literal, $($(#[$attr:meta])* $test:ident),*) => {
        $(#[$cfg])*
        mod $module {
            $(
                $(#[$attr])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($runtime).await
                }
            )*
        }
    };
    ($($(#[$attr:meta])* $test:ident),* $(,)?) => {
        runtime_tests!(@module io_uring, "io-uring", $($(#[$attr])* $test),*);
        runtime_tests!(@module epoll, "epoll", $($(#[$attr])* $test),*);
        runtime_tests!(@module tokio_rt, "tokio", $($(#[$attr])* $test),*);
        runtime_tests!(@module #[cfg(feature = "glommio")] glommio_rt, "glommio", $($(#[$attr])* $test),*);
    };
}

runtime_tests!(
    v3_qos_0_1_2_between_clients,
    v5_qos_0_1_2_between_clients,
    v3_retained_to_late_subscriber,
    v5_retained_to_late_subscriber,
    every_retained_message_reaches_a_late_subscriber,
    v3_will_on_dropped_socket_not_on_disconnect,
    v5_will_on_dropped_socket_not_on_disconnect,
    v5_will_is_published_when_the_session_expires_before_its_delay,
    v3_persistent_session_gets_offline_messages_once,
    v5_persistent_session_gets_offline_messages_once,
    v3_takeover_closes_the_first_connection,
    v5_takeover_sends_disconnect_0x8e,
    thousand_connections_fan_out,
    malformed_bytes_close_only_their_connection,
    v5_sigterm_sends_disconnect_0x8b_and_exits_0,
    raw_v5_takeover_disconnect_0x8e,
    raw_v5_sigterm_disconnect_0x8b_and_exit_0,
    cross_shard_flood_keeps_delivering,
    cross_shard_qos1_flood_keeps_a_persistent_subscriber_served,
    closed_loop_across_shards_loses_no_acknowledged_message,
    a_subscriber_that_never_reads_holds_no_publisher_back,
    large_packets_past_the_buffer_budget_all_arrive,
    connections_over_the_rate_limit_are_closed_unread,
    the_final_disconnect_reaches_a_client_that_is_still_sending,
    the_connection_opened_last_keeps_the_session,
    a_full_retained_set_refuses_new_topics_with_0x97,
    a_shared_subscription_serves_its_connected_member_first,
    a_shared_members_queue_goes_to_another_member_when_its_session_ends,
    max_connections_counts_every_shard_and_frees_slots,
    silent_connections_are_closed_before_and_after_connect,
);

/// Messages each flow-control case publishes.
const FLOW_MESSAGES: usize = 3000;

/// Limits so small that a publisher on one shard outruns a subscriber on the other at once:
/// what matters is what the broker does with a full queue, not when it fills.
const TINY_QUEUES: [&str; 4] = ["--max-inflight", "4", "--max-queued-messages", "8"];

/// A publisher with rumqttc's window of 100 messages in flight, on the shard other than the
/// subscriber's, whose queue holds 8. Every message acknowledged to the publisher must reach the
/// subscriber, for clean and persistent subscribers, at QoS 1 and 2: a full queue must slow the
/// publisher down rather than drop what it was told was delivered.
async fn closed_loop_across_shards_loses_no_acknowledged_message(runtime: &str) {
    let Some(broker) = broker_for(runtime, &TINY_QUEUES) else {
        return;
    };
    let port = broker.port;
    for (qos, clean) in [
        (v3::QoS::AtLeastOnce, true),
        (v3::QoS::AtLeastOnce, false),
        (v3::QoS::ExactlyOnce, true),
        (v3::QoS::ExactlyOnce, false),
    ] {
        let case = format!("{runtime}, {qos:?}, clean session {clean}");
        let base = unique("flow");
        let mut ids = (0..).map(|n| format!("{base}-{n}"));
        let subscriber_id = ids.find(|id| home_shard(id, 2) == 0).unwrap();
        let publisher_id = ids.find(|id| home_shard(id, 2) == 1).unwrap();
        let topic = format!("{base}/t");
        let mut options = v3::options(port, &subscriber_id);
        options.set_clean_session(clean);
        let (mut subscriber, _) = v3::Client::connect_with(options).await;
        subscriber.subscribe(&topic, qos).await;
        let mut publisher = v3::Client::connect(port, &publisher_id).await;
        publisher.publish_window(&topic, qos, FLOW_MESSAGES).await;
        let got: Vec<usize> = subscriber
            .collect(FLOW_MESSAGES)
            .await
            .iter()
            .map(|publish| {
                std::str::from_utf8(&publish.payload)
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            got,
            (0..FLOW_MESSAGES).collect::<Vec<_>>(),
            "{case}: every acknowledged message arrives, once and in order"
        );
        subscriber.assert_quiet("no more than was published").await;
    }
}

/// A subscriber that subscribes and then never reads its socket must not hold its publisher
/// back for good, whether it shares the topic with a subscriber that reads (it is dropped for
/// at once) or is the topic's only subscriber (it is dropped for once it has acknowledged
/// nothing for the stall timeout). The reading subscriber still gets everything.
async fn a_subscriber_that_never_reads_holds_no_publisher_back(runtime: &str) {
    let Some(broker) = broker_for(runtime, &TINY_QUEUES) else {
        return;
    };
    let port = broker.port;
    let base = unique("stalled");
    let shared_topic = format!("{base}/shared");
    let lonely_topic = format!("{base}/lonely");
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stalled
        .write_all(&connect_packet(&format!("{base}-stalled"), 4, 0x02))
        .unwrap();
    for (packet_id, topic) in [(1u16, &shared_topic), (2, &lonely_topic)] {
        let mut body = packet_id.to_be_bytes().to_vec();
        body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        body.extend_from_slice(topic.as_bytes());
        body.push(1);
        let mut subscribe = vec![0x82, body.len() as u8];
        subscribe.extend(body);
        stalled.write_all(&subscribe).unwrap();
    }
    let mut reader = v3::Client::connect(port, &format!("{base}-reader")).await;
    reader.subscribe(&shared_topic, v3::QoS::AtLeastOnce).await;
    let mut publisher = v3::Client::connect(port, &format!("{base}-publisher")).await;
    publisher
        .publish_window(&shared_topic, v3::QoS::AtLeastOnce, FLOW_MESSAGES)
        .await;
    assert_eq!(reader.collect(FLOW_MESSAGES).await.len(), FLOW_MESSAGES);
    publisher
        .publish_window(&lonely_topic, v3::QoS::AtLeastOnce, FLOW_MESSAGES)
        .await;
    drop(stalled);
}

/// Bytes of each publish in `large_packets_past_the_buffer_budget_all_arrive`: 256 reads of the
/// default size.
const LARGE_PAYLOAD: usize = 2 << 20;

/// Four 2 MiB publishes arriving at once, past a buffer budget of 1 MiB (512 KiB per shard):
/// every reader but the one whose packet started first waits before it grows its buffer, and
/// each packet still gets in whole, is acknowledged and delivered.
async fn large_packets_past_the_buffer_budget_all_arrive(runtime: &str) {
    let Some(broker) = broker_for(runtime, &["--buffer-budget", "1048576"]) else {
        return;
    };
    let port = broker.port;
    let base = unique("large");
    let topic = format!("{base}/t");
    let large_options = |id: String| {
        let mut options = v3::options(port, &id);
        options.set_max_packet_size(2 * LARGE_PAYLOAD, 2 * LARGE_PAYLOAD);
        options
    };
    let (mut subscriber, _) =
        v3::Client::connect_with(large_options(format!("{base}-subscriber"))).await;
    subscriber.subscribe(&topic, v3::QoS::AtLeastOnce).await;
    let publishers: Vec<_> = (0..4u8)
        .map(|marker| {
            let options = large_options(format!("{base}-publisher-{marker}"));
            let topic = topic.clone();
            tokio::spawn(async move {
                let (mut publisher, _) = v3::Client::connect_with(options).await;
                publisher
                    .publish(
                        &topic,
                        v3::QoS::AtLeastOnce,
                        false,
                        vec![marker; LARGE_PAYLOAD],
                    )
                    .await;
            })
        })
        .collect();
    for publisher in publishers {
        publisher
            .await
            .expect("every large publish is acknowledged");
    }
    let mut markers: Vec<u8> = subscriber
        .collect(4)
        .await
        .iter()
        .map(|publish| {
            assert_eq!(
                publish.payload.len(),
                LARGE_PAYLOAD,
                "{runtime}: whole payload"
            );
            let marker = publish.payload[0];
            assert!(
                publish.payload.iter().all(|&byte| byte == marker),
                "{runtime}: payload {marker} arrived unmixed"
            );
            marker
        })
        .collect();
    markers.sort_unstable();
    assert_eq!(markers, [0, 1, 2, 3], "{runtime}: each publish once");
    subscriber.assert_quiet("no more than was published").await;
}

/// Messages the subscriber must get while the flood is still going.
const FLOOD_DELIVERIES: usize = 2000;

/// A publisher on each shard flooding QoS 0 at a subscriber homed on the other shard keeps both
/// inboxes full. The deliveries they cause must still be written while the flood goes on, not
/// only once it stops (tokio once starved the writers this way).
async fn cross_shard_flood_keeps_delivering(runtime: &str) {
    let Some(broker) = broker_for(runtime, &[]) else {
        return;
    };
    let port = broker.port;
    let stop = Arc::new(AtomicBool::new(false));
    let base = unique("flood");
    let mut ids = (0..).map(|n| format!("{base}-{n}"));
    let mut subscribers = Vec::new();
    let mut publishers = Vec::new();
    for shard in 0..2 {
        let topic = format!("{base}/to-shard-{shard}");
        let subscriber_id = ids.find(|id| home_shard(id, 2) == shard).unwrap();
        let mut subscriber = v3::Client::connect(port, &subscriber_id).await;
        subscriber.subscribe(&topic, v3::QoS::AtMostOnce).await;
        subscribers.push(subscriber);
        let publisher_id = ids.find(|id| home_shard(id, 2) != shard).unwrap();
        publishers.push((publisher_id, topic));
    }
    let floods: Vec<_> = publishers
        .into_iter()
        .map(|(id, topic)| {
            let stop = stop.clone();
            std::thread::spawn(move || flood(port, &id, &topic, 0, &stop))
        })
        .collect();
    let started = Instant::now();
    let mut received = [0; 2];
    for (subscriber, received) in subscribers.iter_mut().zip(&mut received) {
        while *received < FLOOD_DELIVERIES && started.elapsed() < Duration::from_secs(15) {
            if subscriber.recv(Duration::from_secs(1)).await.is_some() {
                *received += 1;
            }
        }
    }
    let still_flooding = floods.iter().all(|flood| !flood.is_finished());
    stop.store(true, Ordering::Relaxed);
    let sent: usize = floods.into_iter().map(|flood| flood.join().unwrap()).sum();
    assert!(
        still_flooding && received == [FLOOD_DELIVERIES; 2],
        "{runtime}: the subscribers got {received:?} of {sent} flooded messages in {:?} (flood still going: {still_flooding})",
        started.elapsed()
    );
}

/// A publisher floods QoS 1 at a persistent subscriber homed on the other shard, which then
/// journals every message and keeps its inbox full. The subscriber must go on receiving during
/// the flood: its acknowledgements have to be read for its window to reopen (monoio once left
/// its reader unscheduled behind the inbox task, and it got nothing more).
async fn cross_shard_qos1_flood_keeps_a_persistent_subscriber_served(runtime: &str) {
    let Some(broker) = broker_for(runtime, &["--max-queued-messages", "100"]) else {
        return;
    };
    let port = broker.port;
    let base = unique("flood1");
    let mut ids = (0..).map(|n| format!("{base}-{n}"));
    let subscriber_id = ids.find(|id| home_shard(id, 2) == 0).unwrap();
    let publisher_id = ids.find(|id| home_shard(id, 2) == 1).unwrap();
    let topic = format!("{base}/t");
    let mut options = v3::options(port, &subscriber_id);
    options.set_clean_session(false);
    let (mut subscriber, _) = v3::Client::connect_with(options).await;
    subscriber.subscribe(&topic, v3::QoS::AtLeastOnce).await;
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = {
        let stop = stop.clone();
        std::thread::spawn(move || flood(port, &publisher_id, &topic, 1, &stop))
    };
    // With a queue of 100 it fills at once; what counts is that deliveries go on after, while
    // the flood does: twice FLOOD_DELIVERIES messages, each within `WAIT` of the one before.
    let first = subscriber.collect(FLOOD_DELIVERIES).await.len();
    let then = subscriber.collect(FLOOD_DELIVERIES).await.len();
    let still_flooding = !flooding.is_finished();
    stop.store(true, Ordering::Relaxed);
    let sent = flooding.join().unwrap();
    assert!(
        still_flooding,
        "{runtime}: the flood ended ({sent} sent) before the subscriber got {first} + {then}"
    );
}

/// Publishes messages at `qos` (0 or 1) as fast as the broker reads them until `stop`, 20 s or
/// a write error; returns how many were written. Acknowledgements are read and ignored.
fn flood(port: u16, id: &str, topic: &str, qos: u8, stop: &AtomicBool) -> usize {
    const BATCH: usize = 256;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(&connect_packet(id, 4, 0x02)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "{id}: CONNACK accepted");
    let mut acks = stream.try_clone().unwrap();
    acks.set_read_timeout(None).unwrap();
    // Ends when the flood shuts the socket down.
    let drain = std::thread::spawn(move || std::io::copy(&mut acks, &mut std::io::sink()));
    let payload = [b'x'; 64];
    let id_len = if qos > 0 { 2 } else { 0 };
    let mut publish = vec![
        0x30 | qos << 1,
        (2 + topic.len() + id_len + payload.len()) as u8,
    ];
    publish.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    publish.extend_from_slice(topic.as_bytes());
    let packet_id_at = publish.len();
    publish.extend_from_slice(&[0; 2][..id_len]);
    publish.extend_from_slice(&payload);
    let mut batch = publish.repeat(BATCH);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sent = 0;
    // A write error means the broker went away, which the caller's checks report.
    loop {
        if qos > 0 {
            for (n, packet) in batch.chunks_mut(publish.len()).enumerate() {
                let packet_id = ((sent + n) % 65535 + 1) as u16;
                packet[packet_id_at..packet_id_at + 2].copy_from_slice(&packet_id.to_be_bytes());
            }
        }
        if stop.load(Ordering::Relaxed)
            || Instant::now() >= deadline
            || stream.write_all(&batch).is_err()
        {
            break;
        }
        sent += BATCH;
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = drain.join();
    sent
}

const PUBLISHERS: usize = 3;
const SUBSCRIBERS: usize = 3;
const PER_QOS: usize = 5;

/// Checks what one subscriber got from `PUBLISHERS` publishers × QoS 0/1/2 × `PER_QOS` on topics
/// `base/p{p}/q{qos}` with payloads "0".."4": each exactly once, in order, at the sent QoS.
fn check_deliveries(who: &str, got: Vec<(String, u8, Vec<u8>)>, base: &str) {
    let mut by_topic: BTreeMap<String, Vec<(u8, String)>> = BTreeMap::new();
    for (topic, qos, payload) in got {
        by_topic
            .entry(topic)
            .or_default()
            .push((qos, String::from_utf8(payload).unwrap()));
    }
    let mut expected = BTreeMap::new();
    for p in 0..PUBLISHERS {
        for qos in 0..3u8 {
            let sent: Vec<(u8, String)> = (0..PER_QOS).map(|k| (qos, k.to_string())).collect();
            expected.insert(format!("{base}/p{p}/q{qos}"), sent);
        }
    }
    assert_eq!(
        by_topic, expected,
        "{who}: every message once, in order, at its QoS"
    );
}

fn qos_of(level: u8) -> rumqttc::QoS {
    rumqttc::qos(level).unwrap()
}

fn qos5_of(level: u8) -> v5::QoS {
    match level {
        0 => v5::QoS::AtMostOnce,
        1 => v5::QoS::AtLeastOnce,
        _ => v5::QoS::ExactlyOnce,
    }
}

async fn v3_qos_0_1_2_between_clients(runtime: &str) {
    let Some(broker) = broker_for(runtime, &[]) else {
        return;
    };
    let base = unique("q3");
    let mut subscribers = Vec::new();
    for s in 0..SUBSCRIBERS {
        let mut client = v3::Client::connect(broker.port, &format!("{base}-sub{s}")).await;
        client
            .subscribe(&format!("{base}/#"), v3::QoS::ExactlyOnce)
            .await;
        subscribers.push(client);
    }
    for p in 0..PUBLISHERS {
        let mut publisher = v3::Client::connect(broker.port, &format!("{base}-pub{p}")).await;
        for qos in 0..3u8 {
            for k in 0..PER_QOS {
                let topic = format!("{base}/p{p}/q{qos}");
                publisher
                    .publish(&topic, qos_of(qos), false, k.to_string())
                    .await;
            }
        }
    }
    for mut subscriber in subscribers {
        let got = subscriber.collect(PUBLISHERS * 3 * PER_QOS).await;
        subscriber.assert_quiet("duplicate delivery").await;
        let got = got
            .iter()
            .map(|p| (v3::topic(p), p.qos as u8, p.payload.to_vec()))
            .collect();
        check_deliveries(&subscriber.id, got, &base);
    }
}

async fn v5_qos_0_1_2_between_clients(runtime: &str) {
    let Some(broker) = broker_for(runtime, &[]) else {
        return;
    };
    let base = unique("q5");
    let mut subscribers = Vec::new();
    for s in 0..SUBSCRIBERS {
        let mut client = v5::Client::connect(broker.port, &format!("{base}-sub{s}")).await;
        client
            .subscribe(&format!("{base}/#"), v5::QoS::ExactlyOnce)
            .await;
        subscribers.push(client);
    }
    for p in 0..PUBLISHERS {
        let mut publisher = v5::Client::connect(broker.port, &format!("{base}-pub{p}")).await;
        for qos in 0..3u8 {
            for k in 0..PER_QOS {
                let topic = format!("{base}/p{p}/q{qos}");
                publisher
                    .publish(&topic, qos5_of(qos), false, k.to_string())
                    .await;
            }
        }
    }
    for mut subscriber in subscribers {
        let got = subscriber.collect(PUBLISHERS * 3 * PER_QOS).await;
        subscriber.assert_quiet("duplicate delivery").await;
        let got = got
            .iter()
            .map(|p| (v5::topic(p), p.qos as u8, p.payload.to_vec()))
            .collect();
        check_deliveries(&subscriber.id, got, &base);
    }
}

async fn v3_retained_to_late_subscriber(runtime: &str) {
    let Some(broker) = broker_for(runtime, &[]) else {
        return;
    };
    let topic = unique("retained3");
    let mut live = v3::Client::connect(broker.port, &unique("live")).await;
    live.subscribe(&topic, v3::QoS::AtLeastOnce).await;
    let mut publisher = v3::Client::connect(broker.port, &unique("pub")).await;
    publisher
        .publish(&topic, v3::QoS::AtLeastOnce, true, "kept")
        .await;
    publisher.disconnect().await;

    // An existing subscription gets it with RETAIN 0 [MQTT-3.3.1-9].
    let message = live.recv(WAIT).await.expect("live subscriber gets it");
    assert_eq!(
        (&message.payload[..], message.retain),
        (&b"kept"[..], false)
    );

    for n in 0..2 {
        let mut late = v3::Client::connect(broker.port, &unique("late")).await;
        late.subscribe(&topic, v3::QoS::AtLeastOnce).await;
        let message = late
            .recv(WAIT)
            .await
            .expect("late subscriber gets the retained message");
        assert_eq!(
            (&message.payload[..], message.retain, message.qos),
            (&b"kept"[..], true, v3::QoS::AtLeastOnce),
            "late subscriber {n}"
        );
        late.assert_quiet("one retained message").await;
    }

    // An empty retained message clears it [MQTT-3.3.1-10].
    let mut publisher = v3::Client::connect(broker.port, &unique("pub")).await;
    publisher
        .publish(&topic, v3::QoS::AtLeastOnce, true, "")
        .await;
    let mut later = v3::Client::connect(broker.port, &unique("later")).await;
    later.subscribe(&topic, v3::QoS::AtLeastOnce).await;
    later.assert_quiet("the retained message was cleared").await;
}

async fn v5_retained_to_late_subscriber(runtime: &str) {
    let Some(broker) = broker_for(runtime, &[]) else {
        return;
    };
    let topic = unique("retained5");
    let mut publisher = v5::Client::connect(broker.port, &unique("pub")).await;
    publisher
        .publish(&topic, v5::QoS::ExactlyOnce, true, "kept5")
        .await;
    publisher.disconnect().await;
    for n in 0..2 {
        let mut late = v5::Client::connect(broker.port, &unique("late")).await;
        late.subscribe(&topic, v5::QoS::ExactlyOnce).await;
        let message = late
            .recv(WAIT)
            .await
            .expect("late subscriber gets the retained message");
        assert_eq!(
            (&message.payload[..], message.retain, message.qos),
            (&b"kept5"[..], true, v5::QoS::ExactlyOnce),
            "late subscriber {n}"
        );
        late.assert_quiet("one retained message").await;
    }
    let mut publisher = v5::Client::connect(broker.port, &unique("pub")).await;
    publisher
        .publish(&topic, v5::QoS::AtLeastOnce, true, "")
        .await;
    let mut later = v5::Client::connect(broker.port, &unique("later")).await;
    later.subscribe(&topic, v5::QoS::AtLeastOnce).await;
    later.assert_quiet("the retained message was cleared").await;
}

/// Retained messages a new `#` subscriber is owed at once: more than the in-flight window and
/// the session queue together hold at their defaults, and more bytes than
/// [`RETAINED_FLOOD_BUFFER`].
const RETAINED_FLOOD: usize = 20_000;

/// A send buffer limit (`--max-outbound-buffer`) well under [`RETAINED_FLOOD`]'s 2.6 MB.
const RETAINED_FLOOD_BUFFER: &str = "1048576";

async fn every_retained_message_reaches_a_late_subscriber(runtime: &str) {
    let Some(broker) = broker_for(runtime, &["--max-outbound-buffer", RETAINED_FLOOD_BUFFER])
    else {
        return;
    };
    retained_flood_reaches_a_late_subscriber(&broker).await;
}

/// A fresh subscriber gets all of [`RETAINED_FLOOD`] retained messages of 100 bytes, at QoS 0
/// and at QoS 1, each once. (It once got what the send buffer held at QoS 0, and what the
/// in-flight window and the session queue held at QoS 1: the rest was dropped silently.) The
/// broker runs with a send buffer limit of [`RETAINED_FLOOD_BUFFER`].
async fn retained_flood_reaches_a_late_subscriber(broker: &Broker) {
    for qos in [v3::QoS::AtMostOnce, v3::QoS::AtLeastOnce] {
        let base = unique("flood-retained");
        let mut ids = (0..).map(|n| format!("{base}-{n}"));
        // Both on one shard: the other shard stores retained messages when its inbox gets to
        // them, which may be after the subscribe.
        let publisher_id = ids.next().unwrap();
        let shard = home_shard(&publisher_id, 2);
        let subscriber_id = ids.find(|id| home_shard(id, 2) == shard).unwrap();
        retain_raw(broker.port, &publisher_id, &base, qos as u8);

        let mut subscriber = v3::Client::connect(broker.port, &subscriber_id).await;
        subscriber.subscribe(&format!("{base}/#"), qos).await;
        let received = subscriber.collect(RETAINED_FLOOD).await;
        subscriber.assert_quiet("each retained message once").await;
        assert!(
            received.iter().all(|p| p.retain && p.qos == qos),
            "{qos:?}: RETAIN set, at the published QoS"
        );
        let topics: std::collections::BTreeSet<String> = received.iter().map(v3::topic).collect();
        assert_eq!(topics.len(), RETAINED_FLOOD, "{qos:?}: no duplicates");
        assert!(topics.contains(&format!("{base}/{}", RETAINED_FLOOD - 1)));
    }
}

/// Publishes [`RETAINED_FLOOD`] retained messages on `base/0`, `base/1`… as MQTT 3.1.1 bytes
/// in one write, and returns once the broker has handled them all (its PINGRESP follows their
/// PUBACKs).
fn retain_raw(port: u16, id: &str, base: &str, qos: u8) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(&connect_packet(id, 4, 0x02)).unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "CONNACK accepted");
    let mut bytes = Vec::new();
    for n in 0..RETAINED_FLOOD {
        let topic = format!("{base}/{n}");
        let packet_id = if qos > 0 { 2 } else { 0 };
        // Topic length and topic, packet identifier, payload: under 16384, two bytes at most.
        let remaining = 2 + topic.len() + packet_id + 100;
        bytes.push(0x30 | qos << 1 | 1);
        if remaining < 128 {
            bytes.push(remaining as u8);
        } else {
            bytes.extend_from_slice(&[remaining as u8 | 0x80, (remaining >> 7) as u8]);
        }
        bytes.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        bytes.extend_from_slice(topic.as_bytes());
        if qos > 0 {
            bytes.extend_from_slice(&((n % 60_000) as u16 + 1).to_be_bytes());
        }
        bytes.extend_from_slice(&[b'r'; 100]);
    }
    bytes.extend_from_slice(&[0xC0, 0x00]);
    stream.write_all(&bytes).unwrap();
    let pubacks = if qos > 0 { 4 * RETAINED_FLOOD } else { 0 };
    let mut answers = vec![0u8; pubacks + 2];
    stream.read_exact(&mut answers).unwrap();
    assert_eq!(
        answers[pubacks..],
        [0xD0, 0x00],
        "PINGRESP after the PUBACKs"
    );
}

async fn v3_will_on_dropped_socket_not_on_disconnect(runtime: &str) {
    let Some(broker) = broker_for(runtime, &[]) else {
        return;
    };
    let base = unique("will3");
    let mut watcher = v3::Client::connect(broker.port, &format!("{base}-watch")).await;
    watcher
        .subscribe(&format!("{base}/#"), v3::QoS::AtLeastOnce)
        .await;

    // A clean DISCONNECT discards the will [MQTT-3.14.4-3].
    let mut options = v3::options(broker.port, &format!("{base}-polite"));
    options.set_last_will(v3::LastWill::new(
        format!("{base}/polite"),
        "polite gone",
        v3::QoS::AtLeastOnce,
        false,
    ));
    let (polite, _) = v3::Client::connect_with(options).await;
    polite.disconnect().await;
    watcher.assert_quiet("no will after DISCONNECT").await;

    // A connection closed without DISCONNECT publishes it [MQTT-3.1.2-8].
    let mut options = v3::options(broker.port, &format!("{base}-rude"));
    options.set_last_will(v3::LastWill::new(
        format!("{base}/rude"),
        "rude gone",
        v3::QoS::AtLeastOnce,
        false,
    ));
    let (rude, _) = v3::Client::connect_with(options).await;
    rude.drop_connection().await;
    let will = watcher
        .recv(WAIT)
        .await
        .expect("will after a dropped socket");
    assert_eq!(
        (v3::topic(&will), &will.payload[..]),
        (format!("{base}/rude"), &b"rude gone"[..])
    );
    watcher.assert_quiet("the will is published once").await;
}

async fn v5_will_on_dropped_socket_not_on_disconnect(runtime: &str) {
    let Some(broker) = broker_for(runtime, &[]) else {
        return;
    };
    let base = unique("will5");
    let mut watcher = v5::Client::connect(broker.port, &format!("{base}-watch")).await;
    watcher
        .subscribe(&format!("{base}/#"), v5::QoS::AtLeastOnce)
        .await;

    let mut options = v5::options(broker.port, &format!("{base}-polite"));
    options.set_last_will(v5_will(&format!("{base}/polite"), b"polite gone", None));
    let (polite, _) = v5::Client::connect_with(options).await;
    polite.disconnect().await;
    watcher.assert_quiet("no will after DISCONNECT 0x00").await;

    let mut options = v5::options(broker.port, &format!("{base}-rude"));
    options.set_last_will(v5_will(&format!("{base}/rude"), b"rude gone", None));
    let (rude, _) = v5::Client::connect_with(options).await;
    rude.drop_connection().await;
    let will = watcher
        .recv(WAIT)
        .await
        .expect("will after a dropped socket");
    assert_eq!(
        (v5::topic(&will), &will.payload[..]),
        (format!("{base}/rude"), &b"rude gone"[..])
    );
    watcher.assert_quiet("the will is published once").await;
}

/// MQTT 5 §3.1.3.2.2: the will is published when its delay has passed or the session ends,
/// whichever comes first. A client with a session expiry of 2 s and a will delay of 30 s drops
/// its connection: the will comes when the session expires, not before, and not 30 s later.
async fn v5_will_is_published_when_the_session_expires_before_its_delay(runtime: &str) {
    const SESSION_EXPIRY: u32 = 2;
    const WILL_DELAY: u32 = 30;
    let Some(broker) = broker_for(runtime, &[]) else {
        return;
    };
    let base = unique("expiring");
    let topic = format!("{base}/will");
    let mut watcher = v5::Client::connect(broker.port, &format!("{base}-watch")).await;
    watcher.subscribe(&topic, v5::QoS::AtLeastOnce).await;
    let mut options = v5::options(broker.port, &format!("{base}-dying"));
    options.set_session_expiry_interval(Some(SESSION_EXPIRY));
    options.set_last_will(v5_will(&topic, b"session over", Some(WILL_DELAY)));
    let (dying, _) = v5::Client::connect_with(options).await;
    dying.drop_connection().await;
    let dropped = Instant::now();
    // Well before the will delay: a will that waited for it fails here.
    let guard = Duration::from_secs(u64::from(WILL_DELAY) * 2 / 3);
    let will = watcher.recv(guard).await.unwrap_or_else(|| {
        panic!(
            "{runtime}: no will within {guard:?} of the drop, though the session expired after \
             {SESSION_EXPIRY} s"
        )
    });
    let at = dropped.elapsed();
    assert_eq!(&will.payload[..], b"session over");
    assert!(
        at >= Duration::from_millis(u64::from(SESSION_EXPIRY) * 1000 * 3 / 4),
        "{runtime}: will published {at:?} after the drop, before the session expired \
         ({SESSION_EXPIRY} s)"
    );
    watcher.assert_quiet("the will is published once").await;
}

const OFFLINE_MESSAGES: usize = 5;

async fn v3_persistent_session_gets_offline_messages_once(runtime: &str) {
    let Some(broker) = broker_for(runtime, &[]) else {
        return;
    };
    let id = unique("persist3");
    let topic = format!("{id}/inbox");
    let mut options = v3::options(broker.port, &id);
    options.set_clean_session(false);
    let (mut client, connack) = v3::Client::connect_with(options.clone()).await;
    assert!(!connack.session_present, "a new client id has no session");
    client.subscribe(&topic, v3::QoS::AtLeastOnce).await;
    client.disconnect().await;

    let mut publisher = v3::Client::connect(broker.port, &unique("pub")).await;
    for k in 0..OFFLINE_MESSAGES {
        publisher
            .publish(&topic, v3::QoS::AtLeastOnce, false, format!("offline {k}"))
            .await;
    }

    let (mut client, connack) = v3::Client::connect_with(options).await;
    assert!(
        connack.session_present,
        "the session was kept [MQTT-3.2.2-2]"
    );
    let got: Vec<_> = client
        .collect(OFFLINE_MESSAGES)
        .await
        .iter()
        .map(|p| (String::from_utf8(p.payload.to_vec()).unwrap(), p.qos))
        .collect();
    let expected: Vec<_> = (0..OFFLINE_MESSAGES)
        .map(|k| (format!("offline {k}"), v3::QoS::AtLeastOnce))
        .collect();
    assert_eq!(got, expected);
    client.assert_quiet("queued messages are sent once").await;

    // The subscription survived too.
    publisher
        .publish(&topic, v3::QoS::AtLeastOnce, false, "online")
        .await;
    let message = client.recv(WAIT).await.expect("live message after resume");
    assert_eq!(&message.payload[..], b"online");
}

async fn v5_persistent_session_gets_offline_messages_once(runtime: &str) {
    let Some(broker) = broker_for(runtime, &[]) else {
        return;
    };
    let id = unique("persist5");
    let topic = format!("{id}/inbox");
    let mut options = v5::options(broker.port, &id);
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(60));
    let (mut client, connack) = v5::Client::connect_with(options.clone()).await;
    assert!(!connack.session_present, "a new client id has no session");
    client.subscribe(&topic, v5::QoS::AtLeastOnce).await;
    client.disconnect().await;

    let mut publisher = v5::Client::connect(broker.port, &unique("pub")).await;
    for k in 0..OFFLINE_MESSAGES {
        publisher
            .publish(&topic, v5::QoS::AtLeastOnce, false, format!("offline {k}"))
            .await;
    }

    let (mut client, connack) = v5::Client::connect_with(options).await;
    assert!(
        connack.session_present,
        "the session was kept [MQTT-3.2.2-2]"
    );
    let got: Vec<_> = client
        .collect(OFFLINE_MESSAGES)
        .await
        .iter()
        .map(|p| (String::from_utf8(p.payload.to_vec()).unwrap(), p.qos))
        .collect();
    let expected: Vec<_> = (0..OFFLINE_MESSAGES)
        .map(|k| (format!("offline {k}"), v5::QoS::AtLeastOnce))
        .collect();
    assert_eq!(got, expected);
    client.assert_quiet("queued messages are sent once").await;
}

async fn v3_takeover_closes_the_first_connection(runtime: &str) {
    let Some(broker) = broker_for(runtime, &[]) else {
        return;
    };
    let id = unique("take3");
    let topic = format!("{id}/t");
    let mut first = v3::Client::connect(broker.port, &id).await;
    first.subscribe(&topic, v3::QoS::AtLeastOnce).await;
    let mut second = v3::Client::connect(broker.port, &id).await;
    let error = first.closed(WAIT).await;
    assert!(
        error.is_some(),
        "the first connection of {id} stays open after a takeover [MQTT-3.1.4-2]"
    );
    // The new connection works.
    second.subscribe(&topic, v3::QoS::AtLeastOnce).await;
    let mut publisher = v3::Client::connect(broker.port, &unique("pub")).await;
    publisher
        .publish(&topic, v3::QoS::AtLeastOnce, false, "after takeover")
        .await;
    let message = second.recv(WAIT).await.expect("second connection works");
    assert_eq!(&message.payload[..], b"after takeover");
    second.assert_quiet("one delivery").await;
    // The first connection's event loop has ended, so this returns as soon as its channel is
    // empty: it must not have been given the message meant for its successor.
    assert!(
        first.recv(WAIT).await.is_none(),
        "the closed first connection got a message"
    );
}

async fn v5_takeover_sends_disconnect_0x8e(runtime: &str) {
    let Some(broker) = broker_for(runtime, &[]) else {
        return;
    };
    let id = unique("take5");
    let topic = format!("{id}/t");
    let mut first = v5::Client::connect(broker.port, &id).await;
    let mut second = v5::Client::connect(broker.port, &id).await;
    assert_eq!(
        first.server_disconnect().await,
        v5::DisconnectReasonCode::SessionTakenOver,
        "MQTT 5 §3.1.4: the old connection gets DISCONNECT 0x8E"
    );
    second.subscribe(&topic, v5::QoS::AtLeastOnce).await;
    let mut publisher = v5::Client::connect(broker.port, &unique("pub")).await;
    publisher
        .publish(&topic, v5::QoS::AtLeastOnce, false, "after takeover")
        .await;
    let message = second.recv(WAIT).await.expect("second connection works");
    assert_eq!(&message.payload[..], b"after takeover");
}

const FAN_OUT: usize = 1000;

/// Raises the soft limit on open files to at least `needed`; fails if the hard limit is lower.
fn ensure_open_files(needed: u64) {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("getrlimit");
    if soft >= needed {
        return;
    }
    assert!(
        hard >= needed,
        "{FAN_OUT} connections need {needed} open files, the hard limit is {hard} (raise it \
         with `ulimit -Hn`, see ops/tune-kernel.sh)"
    );
    rlimit::setrlimit(rlimit::Resource::NOFILE, needed, hard).expect("setrlimit");
}

/// One fan-out test at a time in this process: it bounds the open files and the load.
static FAN_OUT_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn thousand_connections_fan_out(runtime: &str) {
    let _one_at_a_time = FAN_OUT_LOCK.lock().await;
    // Each side holds FAN_OUT sockets; the broker inherits this process's limit.
    ensure_open_files(FAN_OUT as u64 + 512);
    let Some(mut broker) = broker_for(runtime, &[]) else {
        return;
    };
    let port = broker.port;
    let topic = unique("fan");
    let started = Instant::now();
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(100));
    let mut connecting = tokio::task::JoinSet::new();
    for n in 0..FAN_OUT {
        let (topic, limit) = (topic.clone(), limit.clone());
        connecting.spawn(async move {
            let _permit = limit.acquire().await.unwrap();
            let mut client = v3::Client::connect(port, &format!("{topic}-{n}")).await;
            client.subscribe(&topic, v3::QoS::AtLeastOnce).await;
            client
        });
    }
    let mut clients = Vec::with_capacity(FAN_OUT);
    while let Some(client) = connecting.join_next().await {
        clients.push(client.expect("a client connects and subscribes"));
    }
    eprintln!(
        "{runtime}: {FAN_OUT} clients connected and subscribed in {:?}",
        started.elapsed()
    );

    let mut publisher = v3::Client::connect(port, &unique("fan-pub")).await;
    publisher
        .publish(&topic, v3::QoS::AtLeastOnce, false, "to everyone")
        .await;
    let mut receiving = tokio::task::JoinSet::new();
    for mut client in clients {
        receiving.spawn(async move {
            let got = client.recv(Duration::from_secs(20)).await;
            (client.id.clone(), got.map(|p| p.payload.to_vec()), client)
        });
    }
    let mut missing = Vec::new();
    let mut clients = Vec::new();
    while let Some(result) = receiving.join_next().await {
        let (id, got, client) = result.unwrap();
        if got.as_deref() != Some(&b"to everyone"[..]) {
            missing.push((id, got));
        }
        clients.push(client);
    }
    assert!(
        missing.is_empty(),
        "{} of {FAN_OUT} subscribers did not get the message, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    broker.assert_healthy();
    eprintln!(
        "{runtime}: fan-out to {FAN_OUT} done in {:?}",
        started.elapsed()
    );
    for client in clients {
        client.drop_connection().await;
    }
}

/// A v3.1.1 CONNECT with clean session, keepalive 60 and client id `id`.
fn connect_packet(id: &str, protocol_level: u8, flags: u8) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', protocol_level, flags, 0, 60];
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// Everything the broker sends until it closes the connection; panics if it keeps the
/// connection open for `WAIT`.
fn read_until_closed(stream: &mut TcpStream, case: &str) -> Vec<u8> {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 256];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("{case}: the broker kept the connection open for {WAIT:?} (got {received:02x?})")
            }
            // A reset is a close too.
            Err(_) => return received,
        }
    }
}

/// Opens a raw connection; with `connect` it first completes a v3.1.1 CONNECT/CONNACK.
fn raw(port: u16, connect: bool) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    if connect {
        stream
            .write_all(&connect_packet(&unique("raw"), 4, 0x02))
            .unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack).unwrap();
        assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "CONNACK accepted");
    }
    stream
}

/// `--max-connection-rate 5`: of 20 connections opened at once from one address, the first 5
/// (and whatever the bucket refills meanwhile) are served, the rest closed without a CONNACK;
/// once a second has passed, the next is served again.
async fn connections_over_the_rate_limit_are_closed_unread(runtime: &str) {
    let Some(broker) = broker_for(runtime, &["--max-connection-rate", "5"]) else {
        return;
    };
    let port = broker.port;
    let started = Instant::now();
    let served = (0..20)
        .filter(|n| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let id = format!("{}-{n}", unique("rate"));
            // A refused connection may be closed before the CONNECT is written.
            let _ = stream.write_all(&connect_packet(&id, 4, 0x02));
            let answer = read_until_closed_or(&mut stream, 4);
            match answer.as_slice() {
                [0x20, 0x02, 0x00, 0x00] => true,
                [] => false,
                other => panic!("{runtime}: connection {n} got {other:02x?}"),
            }
        })
        .count();
    let refill = (started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    assert!(
        (5..=5 + refill).contains(&served),
        "{runtime}: {served} of 20 served in {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut stream = raw(port, true);
    stream.write_all(&[0xe0, 0x00]).unwrap();
    assert!(
        broker.logs().contains("--max-connection-rate"),
        "{runtime}: the refusals are logged"
    );
}

/// A v5 client over Receive Maximum (2 here) with QoS 2 is told DISCONNECT 0x93 while it is still
/// sending (256 KiB of PINGREQs right behind the publish that broke the limit, and more once it
/// has read the reason). The broker must not close with that input unread, which makes the
/// kernel reset the connection: a client's writes then fail, and one that meets the failure
/// before it reads never learns the reason (Paho's `test_flow_control2`). The broker reads and
/// discards it instead, and closes only once the client does or a moment has passed.
async fn the_final_disconnect_reaches_a_client_that_is_still_sending(runtime: &str) {
    let Some(broker) = broker_for(runtime, &["--receive-maximum", "2"]) else {
        return;
    };
    for round in 0..3 {
        let id = unique("over");
        let case = format!("{runtime}, round {round}");
        let mut stream = raw_v5(broker.port, &id);
        let mut burst = Vec::new();
        for packet_id in 1..=3u8 {
            // PUBLISH QoS 2, topic "t", packet id, no properties, payload "x".
            burst.extend_from_slice(&[0x34, 7, 0, 1, b't', 0, packet_id, 0, b'x']);
        }
        let pingreqs: Vec<u8> = std::iter::repeat_n([0xC0u8, 0x00], 128 * 1024)
            .flatten()
            .collect();
        burst.extend_from_slice(&pingreqs);
        stream.write_all(&burst).unwrap();
        // Two PUBRECs, then DISCONNECT 0x93 with an empty property list.
        let expected = [
            0x50, 0x02, 0x00, 0x01, 0x50, 0x02, 0x00, 0x02, 0xE0, 0x02, 0x93, 0x00,
        ];
        let mut got = vec![0u8; expected.len()];
        if let Err(error) = stream.read_exact(&mut got) {
            panic!("{case}: reset before the DISCONNECT was read: {error}");
        }
        assert_eq!(got, expected, "{case}");
        if let Err(error) = stream.write_all(&pingreqs) {
            panic!("{case}: the broker reset the connection it closed: {error}");
        }
        let rest = read_until_closed(&mut stream, &case);
        assert!(
            rest.is_empty(),
            "{case}: nothing after the DISCONNECT: {rest:02x?}"
        );
    }
}

/// Forty MQTT 5 connections with one client id, opened one after another as fast as they go,
/// each sending CONNECT and a QoS 1 PUBLISH without waiting. SO_REUSEPORT spreads them over both
/// shards, and those accepted away from the client's home shard reach it later, by hand-over.
/// The connection opened last must be the one that stays; every earlier one gets its CONNACK and
/// then DISCONNECT 0x8E.
async fn the_connection_opened_last_keeps_the_session(runtime: &str) {
    let Some(mut broker) = broker_for(runtime, &[]) else {
        return;
    };
    let port = broker.port;
    let case = runtime.to_string();
    tokio::task::spawn_blocking(move || {
        let id = unique("newest");
        let mut opening = v5_connect_packet(&id);
        // PUBLISH QoS 1, topic "t", packet id 1, no properties, payload "x".
        opening.extend_from_slice(&[0x32, 7, 0, 1, b't', 0, 1, 0, b'x']);
        let mut streams: Vec<TcpStream> = (0..40)
            .map(|_| {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream.write_all(&opening).unwrap();
                stream
            })
            .collect();
        let mut newest = streams.pop().unwrap();
        for (n, stream) in streams.iter_mut().enumerate() {
            let kinds = packet_kinds(&read_until_closed(stream, &format!("{case}, #{n}")));
            assert!(
                kinds.first() == Some(&(0x20, 0x00)) && kinds.last() == Some(&(0xE0, 0x8E)),
                "{case}: connection #{n} of 40: CONNACK, then DISCONNECT 0x8E; got {kinds:02x?}"
            );
        }
        // Every other connection is closed, so every takeover is decided: a PINGREQ now is
        // answered after anything the broker had for the newest one, and only if it stays.
        newest.write_all(&[0xC0, 0x00]).unwrap();
        newest.set_read_timeout(Some(WAIT)).unwrap();
        let mut received = Vec::new();
        let mut buffer = [0u8; 256];
        while packet_kinds(&received).last() != Some(&(0xD0, 0x00)) {
            match newest.read(&mut buffer) {
                Ok(read) if read > 0 => received.extend_from_slice(&buffer[..read]),
                outcome => panic!(
                    "{case}: the connection opened last ended ({outcome:?}) after \
                     {received:02x?}"
                ),
            }
        }
        assert_eq!(
            packet_kinds(&received),
            [(0x20, 0x00), (0x40, 0x00), (0xD0, 0x00)],
            "{case}: the connection opened last: CONNACK, PUBACK, and it stays (PINGRESP)"
        );
    })
    .await
    .unwrap();
    broker.assert_healthy();
}

/// `--max-retained-messages 1`: an MQTT 5 QoS 1 publish that would retain a second topic is
/// answered PUBACK 0x97 (quota exceeded); replacing the first topic's message still works.
async fn a_full_retained_set_refuses_new_topics_with_0x97(runtime: &str) {
    let Some(broker) = broker_for(runtime, &["--max-retained-messages", "1"]) else {
        return;
    };
    let port = broker.port;
    let case = runtime.to_string();
    tokio::task::spawn_blocking(move || {
        let base = unique("full");
        let mut stream = raw_v5(port, &base);
        let mut ack_for = |topic: &str, packet_id: u8| {
            let mut publish = vec![0x33, 0, 0, topic.len() as u8];
            publish.extend_from_slice(topic.as_bytes());
            publish.extend_from_slice(&[0, packet_id, 0, b'x']);
            publish[1] = (publish.len() - 2) as u8;
            stream.write_all(&publish).unwrap();
            let mut header = [0u8; 2];
            stream.read_exact(&mut header).unwrap();
            let mut body = vec![0u8; header[1] as usize];
            stream.read_exact(&mut body).unwrap();
            assert_eq!(
                (header[0], &body[..2]),
                (0x40, &[0, packet_id][..]),
                "{case}: PUBACK"
            );
            body.get(2).copied().unwrap_or(0)
        };
        let (first, second) = (format!("{base}/a"), format!("{base}/b"));
        assert_eq!(
            ack_for(&first, 1),
            0x00,
            "{case}: the first topic is retained"
        );
        assert_eq!(
            ack_for(&second, 2),
            0x97,
            "{case}: no room for a second topic"
        );
        assert_eq!(ack_for(&first, 3), 0x00, "{case}: replacing always works");
    })
    .await
    .unwrap();
}

/// `--max-connections 4` over 2 shards: four clients, whichever shards they land on, are
/// served; a fifth is refused with CONNACK 0x97 (MQTT 5) and closed; once one of the four has
/// sent DISCONNECT and been closed, a new client gets its slot, even while the leaving client's
/// socket is still open (the broker reads it out for a moment after closing).
async fn max_connections_counts_every_shard_and_frees_slots(runtime: &str) {
    let Some(broker) = broker_for(runtime, &["--max-connections", "4"]) else {
        return;
    };
    let port = broker.port;
    let case = runtime.to_string();
    tokio::task::spawn_blocking(move || {
        let base = unique("slots");
        let mut held: Vec<TcpStream> = (0..4)
            .map(|n| raw_v5(port, &format!("{base}-{n}")))
            .collect();
        let refused = format!("{base}-refused");
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.write_all(&v5_connect_packet(&refused)).unwrap();
        let answer = read_until_closed(&mut stream, &format!("{case}: the fifth client"));
        assert_eq!(
            answer.get(..4),
            Some(&[0x20, answer[1], 0x00, 0x97][..]),
            "{case}: the fifth client is refused with 0x97: {answer:02x?}"
        );
        // A DISCONNECT frees a slot, on whichever shard it was, at once.
        let mut leaving = held.pop().unwrap();
        leaving.write_all(&[0xE0, 0x00]).unwrap();
        read_until_closed(&mut leaving, &format!("{case}: the leaving client"));
        let _again = raw_v5(port, &format!("{base}-again"));
    })
    .await
    .unwrap();
}

/// `--connect-timeout 1`: a connection that never sends CONNECT is closed; a client that
/// connected with a keepalive of 1 s and then says nothing is closed once one and a half
/// keepalives pass (MQTT-3.1.2-24), and its will goes out. Counted by events, not timed: each
/// close must come within `WAIT`.
async fn silent_connections_are_closed_before_and_after_connect(runtime: &str) {
    let Some(broker) = broker_for(runtime, &["--connect-timeout", "1"]) else {
        return;
    };
    let port = broker.port;
    let base = unique("silent");
    let will_topic = format!("{base}/gone");
    let mut watcher = v3::Client::connect(port, &format!("{base}-watcher")).await;
    watcher.subscribe(&will_topic, v3::QoS::AtLeastOnce).await;
    let case = runtime.to_string();
    let topic = will_topic.clone();
    tokio::task::spawn_blocking(move || {
        let mut mute = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let got = read_until_closed(&mut mute, &format!("{case}: no CONNECT"));
        assert!(
            got.is_empty(),
            "{case}: nothing sent before CONNECT: {got:02x?}"
        );
        // 3.1.1 CONNECT, keepalive 1 s, with a QoS 1 will on `topic`, then silence.
        let id = format!("{base}-idle");
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02 | 0x04 | 0x08, 0, 1];
        for field in [id.as_bytes(), topic.as_bytes(), b"bye"] {
            body.extend_from_slice(&(field.len() as u16).to_be_bytes());
            body.extend_from_slice(field);
        }
        let mut packet = vec![0x10, body.len() as u8];
        packet.extend(body);
        let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
        idle.write_all(&packet).unwrap();
        let got = read_until_closed(&mut idle, &format!("{case}: keepalive"));
        assert_eq!(
            got,
            [0x20, 0x02, 0x00, 0x00],
            "{case}: CONNACK, then closed"
        );
    })
    .await
    .unwrap();
    let will = watcher.collect(1).await;
    assert_eq!(
        &will[0].payload[..],
        b"bye",
        "{runtime}: the idle client's will"
    );
}

/// A shared subscription's filter, `$share/workers/BASE/job`, and two client ids for its
/// members, homed on shards 0 and 1.
struct Group {
    base: String,
    ids: [String; 2],
    filter: String,
}

impl Group {
    fn new(prefix: &str) -> Group {
        let base = unique(prefix);
        let mut ids = (0..).map(|n| format!("{base}-{n}"));
        let ids = [0, 1].map(|shard| ids.find(|id| home_shard(id, 2) == shard).unwrap());
        let filter = format!("$share/workers/{base}/job");
        Group { base, ids, filter }
    }
}

/// Options of a 3.1.1 client whose session persists.
fn persistent_options(port: u16, id: &str) -> rumqttc::MqttOptions {
    let mut options = v3::options(port, id);
    options.set_clean_session(false);
    options
}

/// Two members of `$share/workers/...` with persistent sessions on different shards, one of
/// them disconnected: the connected one gets every message, and none waits for the other, which
/// finds nothing when it comes back.
async fn a_shared_subscription_serves_its_connected_member_first(runtime: &str) {
    let Some(broker) = broker_for(runtime, &[]) else {
        return;
    };
    let port = broker.port;
    let Group {
        base,
        ids: [online_id, offline_id],
        filter,
    } = Group::new("share");
    let persistent = |id: &str| persistent_options(port, id);
    let (mut online, _) = v3::Client::connect_with(persistent(&online_id)).await;
    online.subscribe(&filter, v3::QoS::AtLeastOnce).await;
    let (mut offline, _) = v3::Client::connect_with(persistent(&offline_id)).await;
    offline.subscribe(&filter, v3::QoS::AtLeastOnce).await;
    offline.disconnect().await;
    let mut publisher = v3::Client::connect(port, &format!("{base}-publisher")).await;
    publisher
        .publish_window(&format!("{base}/job"), v3::QoS::AtLeastOnce, 20)
        .await;
    assert_eq!(
        online.collect(20).await.len(),
        20,
        "{runtime}: all to the connected member"
    );
    let (mut back, _) = v3::Client::connect_with(persistent(&offline_id)).await;
    back.assert_quiet("nothing waited for the member that was away")
        .await;
}

/// Two members of `$share/workers/...` with persistent sessions on different shards, both away:
/// the messages wait with one or the other. One comes back with a clean session, which ends its
/// old one: what waited for it goes to the other member, which gets all of them on its return.
async fn a_shared_members_queue_goes_to_another_member_when_its_session_ends(runtime: &str) {
    let Some(broker) = broker_for(runtime, &[]) else {
        return;
    };
    let port = broker.port;
    let Group {
        base,
        ids: [keeper_id, leaver_id],
        filter,
    } = Group::new("orphans");
    let persistent = |id: &str| persistent_options(port, id);
    for id in [&keeper_id, &leaver_id] {
        let (mut member, _) = v3::Client::connect_with(persistent(id)).await;
        member.subscribe(&filter, v3::QoS::AtLeastOnce).await;
        member.disconnect().await;
    }
    let mut publisher = v3::Client::connect(port, &format!("{base}-publisher")).await;
    publisher
        .publish_window(&format!("{base}/job"), v3::QoS::AtLeastOnce, 10)
        .await;
    let (leaver, _) = v3::Client::connect_with(v3::options(port, &leaver_id)).await;
    leaver.disconnect().await;
    let (mut keeper, _) = v3::Client::connect_with(persistent(&keeper_id)).await;
    let mut got: Vec<usize> = keeper
        .collect(10)
        .await
        .iter()
        .map(|publish| {
            std::str::from_utf8(&publish.payload)
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    got.sort_unstable();
    assert_eq!(
        got,
        (0..10).collect::<Vec<_>>(),
        "{runtime}: every message, once"
    );
    keeper.assert_quiet("no more than was published").await;
}

/// Each packet's first byte and the first byte of its variable header (a reason code for
/// CONNACK's second byte, PUBACK's third when present, DISCONNECT's first), for packets whose
/// remaining length fits one byte.
fn packet_kinds(mut bytes: &[u8]) -> Vec<(u8, u8)> {
    let mut kinds = Vec::new();
    while bytes.len() >= 2 {
        let (kind, len) = (bytes[0], bytes[1] as usize);
        let body = &bytes[2..(2 + len).min(bytes.len())];
        let reason = match kind {
            0x20 => body.get(1),
            0x40 => body.get(2),
            _ => body.first(),
        };
        kinds.push((kind, reason.copied().unwrap_or(0)));
        bytes = &bytes[(2 + len).min(bytes.len())..];
    }
    kinds
}

/// The first `want` bytes the broker sends, or fewer if it closes the connection first.
fn read_until_closed_or(stream: &mut TcpStream, want: usize) -> Vec<u8> {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut received = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match stream.read(&mut received[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    received.truncate(got);
    received
}

fn malformed_cases(port: u16) {
    // Protocol level 9: CONNACK return code 1 in the 3.1.1 format, which every client reads
    // (MQTT-3.1.2-2), then close.
    let mut stream = raw(port, false);
    stream
        .write_all(&connect_packet("level9", 9, 0x02))
        .unwrap();
    let got = read_until_closed(&mut stream, "CONNECT protocol level 9");
    assert_eq!(
        got,
        [0x20, 0x02, 0x00, 0x01],
        "CONNECT protocol level 9: CONNACK 0x01, then close"
    );

    let cases: &[(&str, bool, &[u8])] = &[
        // The first packet must be CONNECT [MQTT-3.1.0-1].
        (
            "PUBLISH before CONNECT",
            false,
            &[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'],
        ),
        // The remaining length has at most 4 bytes (§2.2.3).
        (
            "5-byte remaining length before CONNECT",
            false,
            &[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
        ),
        (
            "5-byte remaining length",
            true,
            &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
        ),
        // A second CONNECT is a protocol violation [MQTT-3.1.0-2].
        (
            "second CONNECT",
            true,
            &[
                0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'x',
            ],
        ),
        // The reserved CONNECT flag must be 0 [MQTT-3.1.2-3].
        (
            "CONNECT reserved flag",
            false,
            &[
                0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 4, 3, 0, 60, 0, 1, b'y',
            ],
        ),
        // Packet type 0 is reserved (§2.2.1).
        ("packet type 0", true, &[0x00, 0x00]),
        // SUBSCRIBE's fixed-header flags must be 0010 [MQTT-3.8.1-1].
        (
            "SUBSCRIBE with flags 0000",
            true,
            &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b't', 0x00],
        ),
        // PUBLISH with QoS 3 [MQTT-3.3.1-4].
        (
            "PUBLISH QoS 3",
            true,
            &[0x36, 0x07, 0x00, 0x01, b't', 0x00, 0x01, b'h', b'i'],
        ),
    ];
    for (case, connect, bytes) in cases {
        let mut stream = raw(port, *connect);
        stream.write_all(bytes).unwrap();
        let got = read_until_closed(&mut stream, case);
        // Before CONNECT and on a 3.1.1 connection the server closes without a word: 3.1.1
        // has no server DISCONNECT, and a CONNACK or anything else would be wrong.
        assert!(
            got.is_empty(),
            "{case}: expected the connection closed without a reply, got {got:02x?}"
        );
    }
}

async fn malformed_bytes_close_only_their_connection(runtime: &str) {
    let Some(mut broker) = broker_for(runtime, &[]) else {
        return;
    };
    let topic = unique("alive");
    let mut bystander = v3::Client::connect(broker.port, &unique("bystander")).await;
    bystander.subscribe(&topic, v3::QoS::AtLeastOnce).await;
    bystander
        .publish(&topic, v3::QoS::AtLeastOnce, false, "before")
        .await;
    assert_eq!(
        &bystander.recv(WAIT).await.expect("before").payload[..],
        b"before"
    );

    let port = broker.port;
    tokio::task::spawn_blocking(move || malformed_cases(port))
        .await
        .unwrap();

    bystander
        .publish(&topic, v3::QoS::AtLeastOnce, false, "after")
        .await;
    assert_eq!(
        &bystander.recv(WAIT).await.expect("after").payload[..],
        b"after"
    );
    // Still the same connection: its DISCONNECT goes out and the broker closes it in answer
    // (`disconnect` panics if the connection had failed meanwhile).
    bystander.disconnect().await;
    broker.assert_healthy();
}

async fn v5_sigterm_sends_disconnect_0x8b_and_exits_0(runtime: &str) {
    let Some(broker) = broker_for(runtime, &[]) else {
        return;
    };
    let mut clients = Vec::new();
    for n in 0..4 {
        clients.push(v5::Client::connect(broker.port, &unique(&format!("stop{n}"))).await);
    }
    let stopping = tokio::task::spawn_blocking(move || {
        let mut broker = broker;
        let status = broker.terminate(Duration::from_secs(10));
        (status, broker)
    });
    for client in &mut clients {
        assert_eq!(
            client.server_disconnect().await,
            v5::DisconnectReasonCode::ServerShuttingDown,
            "{}: DISCONNECT 0x8B on SIGTERM",
            client.id
        );
    }
    let (status, broker) = stopping.await.unwrap();
    let status = status.unwrap_or_else(|| {
        panic!(
            "the broker did not exit within 10 s of SIGTERM; stderr:\n{}",
            broker.logs()
        )
    });
    assert!(
        status.success(),
        "exit status {status} after SIGTERM; stderr:\n{}",
        broker.logs()
    );
}

/// The blocking build paces retained messages as the sharded one does: its writer, too, takes
/// output until there is none, which is when owed retained messages are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_binary_sends_every_retained_message() {
    let broker = Broker::try_start(
        Binary::Sync,
        &["--max-outbound-buffer", RETAINED_FLOOD_BUFFER],
    )
    .unwrap_or_else(|error| panic!("mqtt-broker-sync did not start: {error}"));
    retained_flood_reaches_a_late_subscriber(&broker).await;
}

/// The blocking build, smoke-tested: QoS 1 between 6 v3.1.1 clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_binary_qos1_pub_sub() {
    let broker = Broker::try_start(Binary::Sync, &[])
        .unwrap_or_else(|error| panic!("mqtt-broker-sync did not start: {error}"));
    let base = unique("sync");
    let mut subscribers = Vec::new();
    for s in 0..3 {
        let mut client = v3::Client::connect(broker.port, &format!("{base}-sub{s}")).await;
        client
            .subscribe(&format!("{base}/#"), v3::QoS::AtLeastOnce)
            .await;
        subscribers.push(client);
    }
    for p in 0..3 {
        let mut publisher = v3::Client::connect(broker.port, &format!("{base}-pub{p}")).await;
        for k in 0..5 {
            publisher
                .publish(
                    &format!("{base}/p{p}"),
                    v3::QoS::AtLeastOnce,
                    false,
                    k.to_string(),
                )
                .await;
        }
    }
    for mut subscriber in subscribers {
        let mut got: Vec<(String, String)> = subscriber
            .collect(15)
            .await
            .iter()
            .map(|p| (v3::topic(p), String::from_utf8(p.payload.to_vec()).unwrap()))
            .collect();
        subscriber.assert_quiet("duplicate delivery").await;
        got.sort();
        let mut expected: Vec<(String, String)> = (0..3)
            .flat_map(|p| (0..5).map(move |k| (p, k)))
            .map(|(p, k)| (format!("{base}/p{p}"), k.to_string()))
            .collect();
        expected.sort();
        assert_eq!(got, expected, "{}", subscriber.id);
    }
}

/// `mqtt-broker-async`, the sharded broker under the original deployment guide's name, exists
/// in this build, serves a publish/subscribe round trip and exits 0 on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_alias_binary_serves_a_round_trip() {
    let mut broker = Broker::try_start(Binary::AsyncAlias, &["--shards", "2"])
        .unwrap_or_else(|error| panic!("mqtt-broker-async did not start: {error}"));
    let topic = unique("alias");
    let mut subscriber = v3::Client::connect(broker.port, &format!("{topic}-sub")).await;
    subscriber.subscribe(&topic, v3::QoS::AtLeastOnce).await;
    let mut publisher = v3::Client::connect(broker.port, &format!("{topic}-pub")).await;
    publisher
        .publish(&topic, v3::QoS::AtLeastOnce, false, "via the alias")
        .await;
    let got = subscriber.collect(1).await;
    assert_eq!(&got[0].payload[..], b"via the alias");
    let status = broker.terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|status| status.success()),
        "mqtt-broker-async: {status:?} within 10 s of SIGTERM (None: still running):\n{}",
        broker.logs()
    );
}

/// A raw MQTT 5 connection with client id `id`, past its successful CONNACK.
/// An MQTT 5 CONNECT with a clean start, keepalive 60 s and no properties.
fn v5_connect_packet(id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0];
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

fn raw_v5(port: u16, id: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(&v5_connect_packet(id)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).unwrap();
    let mut connack = vec![0u8; header[1] as usize];
    stream.read_exact(&mut connack).unwrap();
    assert_eq!(
        (header[0], connack[1]),
        (0x20, 0x00),
        "{id}: CONNACK success, got {header:02x?} {connack:02x?}"
    );
    stream
}

/// The reason code of the DISCONNECT that is the last thing the broker sends before closing.
fn raw_disconnect_reason(stream: &mut TcpStream, case: &str) -> u8 {
    let got = read_until_closed(stream, case);
    // E0, remaining length, reason code, then (optional when the remaining length is 1) the
    // property length (MQTT 5 §3.14.2.2.1).
    let ok = got.len() >= 3 && got[0] == 0xE0 && got[1] as usize == got.len() - 2;
    assert!(
        ok,
        "{case}: expected only a DISCONNECT with a reason code, got {got:02x?}"
    );
    got[2]
}

/// MQTT 5 §3.1.4 and §4.13: the old connection of a taken-over session gets DISCONNECT 0x8E.
/// (What the bytes are, whatever a client library makes of them.)
async fn raw_v5_takeover_disconnect_0x8e(runtime: &str) {
    let Some(mut broker) = broker_for(runtime, &[]) else {
        return;
    };
    let port = broker.port;
    tokio::task::spawn_blocking(move || {
        for n in 0..4 {
            let id = unique("raw-take");
            let mut first = raw_v5(port, &id);
            let _second = raw_v5(port, &id);
            let reason = raw_disconnect_reason(&mut first, &format!("takeover {n}"));
            assert_eq!(reason, 0x8E, "takeover {n}: DISCONNECT reason");
        }
    })
    .await
    .unwrap();
    broker.assert_healthy();
}

/// SIGTERM: every MQTT 5 connection gets DISCONNECT 0x8B (Server shutting down), then the
/// process exits 0.
async fn raw_v5_sigterm_disconnect_0x8b_and_exit_0(runtime: &str) {
    let Some(broker) = broker_for(runtime, &[]) else {
        return;
    };
    tokio::task::spawn_blocking(move || {
        let mut broker = broker;
        let mut clients: Vec<TcpStream> = (0..6)
            .map(|n| raw_v5(broker.port, &unique(&format!("raw-stop{n}"))))
            .collect();
        let status = broker.terminate(Duration::from_secs(10));
        for (n, client) in clients.iter_mut().enumerate() {
            let reason = raw_disconnect_reason(client, &format!("client {n} on SIGTERM"));
            assert_eq!(reason, 0x8B, "client {n}: DISCONNECT reason on SIGTERM");
        }
        let status = status.unwrap_or_else(|| {
            panic!("no exit within 10 s of SIGTERM; stderr:\n{}", broker.logs())
        });
        assert!(
            status.success(),
            "exit status {status} after SIGTERM; stderr:\n{}",
            broker.logs()
        );
    })
    .await
    .unwrap();
}
