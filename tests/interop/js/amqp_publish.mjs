// An AMQP 0-9-1 peer on npm `amqplib`, another client of the same RabbitMQ: node amqp_publish.mjs URL
// stdin:  {"op":"publish","exchange":E,"routingKey":K,"body":"...","contentType":"..."}
//         | {"op":"get","queue":Q} | {"op":"watch","exchange":E,"routingKey":K}
// stdout: {"type":"published"} (after the publisher confirm)
//         | {"type":"got","exchange":E,"routingKey":K,"properties":{...},"body":"..."} (then acked)
//         | {"type":"empty"} | {"type":"watching","queue":Q}
//         | {"type":"message","routingKey":K,"body":"..."} (each delivery to a watch queue)
//         | {"type":"error","message":"..."}
// It declares nothing shared: exchanges and queues are checked, never created, and a watch queue is
// its own (exclusive, server-named), so what it sees is what Wirelab made.
import amqp from "amqplib";
import { emit, onCommand } from "./emit.mjs";

function fail(error) {
  emit({ type: "error", message: String(error?.message ?? error) });
  process.exit(1);
}

const connection = await amqp.connect(process.argv[2]).catch(fail);
const channel = await connection.createConfirmChannel().catch(fail);
channel.on("error", fail);

const commands = {
  async publish({ exchange, routingKey, body, contentType }) {
    await channel.checkExchange(exchange);
    channel.publish(exchange, routingKey, Buffer.from(body, "utf8"), { persistent: true, contentType });
    await channel.waitForConfirms();
    emit({ type: "published" });
  },
  async get({ queue }) {
    const message = await channel.get(queue, { noAck: false });
    if (message === false) {
      emit({ type: "empty" });
      return;
    }
    const { exchange, routingKey, redelivered } = message.fields;
    const { contentType, deliveryMode, messageId, headers } = message.properties;
    emit({
      type: "got",
      exchange,
      routingKey,
      redelivered,
      properties: { contentType, deliveryMode, messageId, headers },
      body: message.content.toString("utf8"),
    });
    channel.ack(message);
  },
  async watch({ exchange, routingKey }) {
    const { queue } = await channel.assertQueue("", { exclusive: true, autoDelete: true });
    await channel.bindQueue(queue, exchange, routingKey);
    const report = ({ fields, content }) =>
      emit({ type: "message", routingKey: fields.routingKey, body: content.toString("utf8") });
    await channel.consume(queue, report, { noAck: true });
    emit({ type: "watching", queue });
  },
};

// One command at a time, in order: each waits for the broker's answer to the one before.
let pending = Promise.resolve();
onCommand(
  (command) => {
    pending = pending.then(() => commands[command.op](command)).catch(fail);
  },
  () => {
    pending.then(() => connection.close()).then(() => process.exit(0), fail);
  },
);
