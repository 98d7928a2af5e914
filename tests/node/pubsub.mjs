// One MQTT.js subscriber and one publisher on URL (ws:// or wss://); with CA_FILE, wss must
// verify the broker's certificate against it. Exits 0 once the subscriber has the message.
// Usage: node pubsub.mjs URL TOPIC [CA_FILE]
import fs from "node:fs";
import mqtt from "mqtt";

const [url, topic, caFile] = process.argv.slice(2);
const options = { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 10000 };
if (caFile) {
  Object.assign(options, { ca: fs.readFileSync(caFile), rejectUnauthorized: true });
}
const payload = `hello over ${url.split(":")[0]}`;
const fail = (why) => {
  console.error(why);
  process.exit(1);
};
setTimeout(() => fail("timed out"), 15000);

const subscriber = mqtt.connect(url, options);
subscriber.on("error", (error) => fail(`subscriber: ${error.message}`));
subscriber.on("message", (got, message) => {
  if (got === topic && message.toString() === payload) {
    console.log(message.toString());
    process.exit(0);
  }
});
subscriber.on("connect", () => {
  subscriber.subscribe(topic, { qos: 1 }, (error) => {
    if (error) fail(`subscribe: ${error.message}`);
    const publisher = mqtt.connect(url, options);
    publisher.on("error", (error) => fail(`publisher: ${error.message}`));
    publisher.on("connect", () => publisher.publish(topic, payload, { qos: 1 }));
  });
});
