// The openai npm package, unchanged, against the service: node client.mjs <base_url> <api_key>.
// Prints one JSON object of what it saw; tests/compat/test_node_sdk.py checks it.
import OpenAI from "openai";

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, timeout: 30_000 });
const seen = {};

const { data: completion, response } = await client.chat.completions
  .create({ model: "echo/x", messages: [{ role: "user", content: "hello from node" }] })
  .withResponse();
seen.content = completion.choices[0].message.content;
seen.object = completion.object;
seen.lifecycleId = response.headers.get("x-lifecycle-id");
seen.id = completion.id;

const stream = await client.chat.completions.create({
  model: "echo/x",
  messages: [{ role: "user", content: "streamed to node in pieces" }],
  stream: true,
  stream_options: { include_usage: true },
  params: { latency_ms: 400 },
});
seen.pieces = [];
for await (const chunk of stream) {
  const piece = chunk.choices[0]?.delta?.content;
  if (piece) seen.pieces.push(piece);
  if (chunk.usage) seen.usage = chunk.usage;
}

const many = await Promise.all(
  Array.from({ length: 20 }, (_, i) =>
    client.chat.completions.create({ model: "echo/x", messages: [{ role: "user", content: `node ${i}` }] }),
  ),
);
seen.many = many.map((c) => c.choices[0].message.content);

try {
  await client.chat.completions.create({ model: "nowhere/x", messages: [{ role: "user", content: "x" }] });
} catch (error) {
  seen.error = { isNotFound: error instanceof OpenAI.NotFoundError, status: error.status, code: error.code };
}

console.log(JSON.stringify(seen));
