//! Who publishes where and who subscribes to what, for each pub/sub scenario.
//!
//! Why it exists: the scenarios differ only in their wiring, and the accounting depends on it
//! (which publishers a subscriber must hear from, whether a group shares one stream). Keeping
//! the wiring in one pure table makes it testable and keeps the run loop scenario-agnostic.
//!
//! - pairs: publisher i → `…/pairs/i` → subscriber i;
//! - fan-in: every publisher → `…/fan-in` → the one subscriber;
//! - fan-out: the one publisher → `…/fan-out` → every subscriber;
//! - shared: every publisher → `…/shared` → `$share/g/…/shared`, one group of all subscribers.

use std::ops::Range;

use super::options::Scenario;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    scenario: Scenario,
    publishers: u32,
    subscribers: u32,
    /// `mqtt-bench/RUN`, unique per run so runs against one broker never cross.
    prefix: String,
}

impl Topology {
    /// `None` for scenarios without publishers and subscribers.
    pub fn new(
        scenario: Scenario,
        publishers: u32,
        subscribers: u32,
        run_id: &str,
    ) -> Option<Topology> {
        match scenario {
            Scenario::Pairs | Scenario::FanIn | Scenario::FanOut | Scenario::Shared => {
                Some(Topology {
                    scenario,
                    publishers,
                    subscribers,
                    prefix: format!("mqtt-bench/{run_id}"),
                })
            }
            Scenario::ConnectStorm | Scenario::Idle | Scenario::Retained => None,
        }
    }

    pub fn publish_topic(&self, publisher: u32) -> String {
        match self.scenario {
            Scenario::Pairs => format!("{}/pairs/{publisher}", self.prefix),
            _ => format!("{}/{}", self.prefix, self.scenario.name()),
        }
    }

    pub fn subscription(&self, subscriber: u32) -> String {
        match self.scenario {
            Scenario::Pairs => format!("{}/pairs/{subscriber}", self.prefix),
            Scenario::Shared => format!("$share/g/{}/shared", self.prefix),
            _ => format!("{}/{}", self.prefix, self.scenario.name()),
        }
    }

    /// The publishers whose messages subscriber `subscriber` (or its group) must receive.
    pub fn sources(&self, subscriber: u32) -> Range<u32> {
        match self.scenario {
            Scenario::Pairs => subscriber..subscriber + 1,
            _ => 0..self.publishers,
        }
    }

    /// Whether the subscribers form one shared-subscription group with one stream.
    pub fn shared(&self) -> bool {
        self.scenario == Scenario::Shared
    }

    /// Deliveries one published message should produce.
    pub fn copies(&self) -> u32 {
        match self.scenario {
            Scenario::FanOut => self.subscribers,
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wiring_per_scenario() {
        let pairs = Topology::new(Scenario::Pairs, 3, 3, "r").unwrap();
        assert_eq!(pairs.publish_topic(2), "mqtt-bench/r/pairs/2");
        assert_eq!(pairs.subscription(2), "mqtt-bench/r/pairs/2");
        assert_eq!(pairs.sources(2), 2..3);
        assert_eq!(pairs.copies(), 1);

        let fan_in = Topology::new(Scenario::FanIn, 5, 1, "r").unwrap();
        assert_eq!(fan_in.publish_topic(4), fan_in.subscription(0));
        assert_eq!(fan_in.sources(0), 0..5);

        let fan_out = Topology::new(Scenario::FanOut, 1, 16, "r").unwrap();
        assert_eq!(fan_out.sources(15), 0..1);
        assert_eq!(fan_out.copies(), 16);

        let shared = Topology::new(Scenario::Shared, 4, 2, "r").unwrap();
        assert_eq!(shared.subscription(1), "$share/g/mqtt-bench/r/shared");
        assert_eq!(shared.publish_topic(3), "mqtt-bench/r/shared");
        assert!(shared.shared() && !fan_out.shared());
        assert_eq!(shared.copies(), 1);

        assert!(Topology::new(Scenario::Idle, 0, 0, "r").is_none());
    }
}
