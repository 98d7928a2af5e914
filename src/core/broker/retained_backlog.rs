//! The retained messages a connection's SUBSCRIBEs matched that are not sent yet.
//!
//! A filter such as `#` can match far more retained messages than a send buffer or a session
//! queue holds: handed over all at once they overflowed both and the excess was dropped without
//! a word. So they wait here instead, and `Broker::resume_retained` sends them as the
//! connection's output drains and its in-flight window frees up. The messages are the retained
//! set's own `Arc`s: a backlog of 100,000 costs under 1 MB of pointers.
//!
//! The backlog belongs to the connection and is never journaled. Retained messages are sent
//! because of a SUBSCRIBE, and only a new SUBSCRIBE sends them again, so what is still owed
//! when the connection ends (or the broker restarts) is not sent: the session keeps its
//! subscriptions, and a client that wants the rest resubscribes. What was already handed to
//! the session (in flight or queued, and journaled for a persistent session) is delivered like
//! any other message.

use std::collections::VecDeque;

use bytestring::ByteString;

use super::message::SharedMessage;
use super::session::Subscription;

#[derive(Debug, Default)]
pub struct RetainedBacklog {
    /// One batch per SUBSCRIBE filter, oldest first, none of them empty. Boxed, and only while
    /// something is owed: idle connections are many and owe nothing.
    #[allow(clippy::box_collection)] // one pointer in every connection instead of four
    batches: Option<Box<VecDeque<Batch>>>,
}

#[derive(Debug)]
struct Batch {
    filter: ByteString,
    /// The options the messages are sent under: those of the SUBSCRIBE that matched them.
    subscription: Subscription,
    /// In the order `Retained::matching` found them, which is the order they are sent in.
    messages: VecDeque<SharedMessage>,
}

impl RetainedBacklog {
    /// Owes `messages`, the retained matches of `filter`, after everything owed so far. A
    /// subscription that replaces one with the same filter sends every retained message again
    /// (MQTT-3.8.4-3), so the matches replace what the older one still owed.
    pub fn push(
        &mut self,
        filter: ByteString,
        subscription: Subscription,
        messages: Vec<SharedMessage>,
    ) {
        self.forget(&filter);
        if !messages.is_empty() {
            self.batches.get_or_insert_default().push_back(Batch {
                filter,
                subscription,
                messages: messages.into(),
            });
        }
    }

    /// Drops what is still owed for `filter`: after an UNSUBSCRIBE no new message matching it
    /// may be sent (MQTT-3.10.4-2).
    pub fn forget(&mut self, filter: &str) {
        if let Some(batches) = &mut self.batches {
            batches.retain(|batch| batch.filter != filter);
            if batches.is_empty() {
                self.batches = None;
            }
        }
    }

    /// The next message owed and the subscription it goes out under.
    pub fn next(&self) -> Option<(&SharedMessage, Subscription)> {
        let batch = self.batches.as_ref()?.front()?;
        Some((batch.messages.front()?, batch.subscription))
    }

    /// Takes the message [`RetainedBacklog::next`] returned.
    pub fn pop(&mut self) -> Option<(SharedMessage, Subscription)> {
        let batches = self.batches.as_mut()?;
        let batch = batches.front_mut()?;
        let message = batch.messages.pop_front()?;
        let subscription = batch.subscription;
        if batch.messages.is_empty() {
            batches.pop_front();
            if batches.is_empty() {
                self.batches = None;
            }
        }
        Some((message, subscription))
    }

    pub fn clear(&mut self) {
        self.batches = None;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::broker::message::Message;
    use crate::broker::time::Timestamp;
    use crate::protocol::{Publish, QoS, SubscriptionOptions};

    fn messages(topics: &[&str]) -> Vec<SharedMessage> {
        topics
            .iter()
            .map(|topic| {
                let publish = Publish {
                    topic: (*topic).into(),
                    retain: true,
                    payload: bytes::Bytes::from_static(b"x"),
                    ..Publish::default()
                };
                Arc::new(Message::from_publish(publish, None, Timestamp::ZERO))
            })
            .collect()
    }

    fn subscription(qos: QoS) -> Subscription {
        Subscription {
            options: SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
            identifier: None,
        }
    }

    fn drain(backlog: &mut RetainedBacklog) -> Vec<(String, QoS)> {
        std::iter::from_fn(|| backlog.pop())
            .map(|(message, subscription)| {
                (message.template.topic.to_string(), subscription.options.qos)
            })
            .collect()
    }

    #[test]
    fn batches_go_out_in_order_each_under_its_own_subscription() {
        let mut backlog = RetainedBacklog::default();
        backlog.push(
            "a/#".into(),
            subscription(QoS::AtMostOnce),
            messages(&["a/1", "a/2"]),
        );
        backlog.push("empty".into(), subscription(QoS::AtMostOnce), Vec::new());
        backlog.push("b".into(), subscription(QoS::AtLeastOnce), messages(&["b"]));
        let (next, _) = backlog.next().expect("owed");
        assert_eq!(next.template.topic, "a/1");
        assert_eq!(
            drain(&mut backlog),
            [
                ("a/1".to_owned(), QoS::AtMostOnce),
                ("a/2".to_owned(), QoS::AtMostOnce),
                ("b".to_owned(), QoS::AtLeastOnce),
            ]
        );
        assert!(backlog.next().is_none());
    }

    #[test]
    fn a_replaced_or_unsubscribed_filter_owes_nothing_more() {
        let mut backlog = RetainedBacklog::default();
        backlog.push(
            "a/#".into(),
            subscription(QoS::AtMostOnce),
            messages(&["a/1", "a/2"]),
        );
        backlog.push("b".into(), subscription(QoS::AtMostOnce), messages(&["b"]));
        backlog.push(
            "a/#".into(),
            subscription(QoS::AtLeastOnce),
            messages(&["a/3"]),
        );
        assert_eq!(
            drain(&mut backlog),
            [
                ("b".to_owned(), QoS::AtMostOnce),
                ("a/3".to_owned(), QoS::AtLeastOnce),
            ]
        );
        backlog.push("c".into(), subscription(QoS::AtMostOnce), messages(&["c"]));
        backlog.forget("c");
        assert!(backlog.next().is_none());
    }
}
