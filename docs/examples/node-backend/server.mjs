// A customer backend in Node, as docs/webhooks.md describes it: it receives the orchestrator's webhooks,
// verifies each with the standardwebhooks package (unchanged), answers at once, then does its own work and
// calls back with data, or with an error the user may see.
//
//   WEBHOOK_SECRET=whsec_… PORT=3000 node server.mjs
//
// Register http(s)://<this host>:3000/ai-hooks as a webhook endpoint, with the secret it returned.
import http from "node:http";
import { Webhook } from "standardwebhooks";

const webhook = new Webhook(process.env.WEBHOOK_SECRET);
const seen = new Set(); // webhook-ids already handled: a retry of one that worked is answered, not redone

async function callBack(callback, body) {
  // Retried while the orchestrator is unreachable or answers 5xx; 2xx and 4xx are final.
  for (let attempt = 0; attempt < 5; attempt += 1) {
    try {
      const response = await fetch(callback.url, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${callback.token}` },
        body: JSON.stringify(body),
      });
      if (response.status < 500) return response.status;
    } catch {
      // the orchestrator is away for a moment: try again
    }
    await new Promise((resolve) => setTimeout(resolve, 500 * 2 ** attempt));
  }
  return null;
}

// Your own validation and enrichment: here, an answer must not be empty.
function review(data) {
  const text = typeof data.output === "string" ? data.output : JSON.stringify(data.output);
  if (!text.trim()) return { error: { code: "empty_answer", message: "No answer this time, please try again." } };
  return { data: { answer: text, words: text.split(/\s+/).length, reviewed_by: "node-backend" } };
}

const server = http.createServer((req, res) => {
  if (req.method !== "POST" || req.url !== "/ai-hooks") {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    const raw = Buffer.concat(chunks).toString("utf8"); // verify the bytes as they came, not re-encoded JSON
    let event;
    try {
      event = webhook.verify(raw, req.headers);
    } catch {
      res.writeHead(400).end();
      return;
    }
    res.writeHead(204).end(); // answer first: our own work must not hold the delivery
    const id = req.headers["webhook-id"];
    if (event.type !== "lifecycle.generated" || seen.has(id)) return;
    seen.add(id);
    callBack(event.data.callback, review(event.data)).then((status) => {
      console.log(JSON.stringify({ lifecycle_id: event.data.lifecycle_id, callback_status: status }));
    });
  });
});

server.listen(Number(process.env.PORT || 3000), "127.0.0.1", () => {
  console.log(JSON.stringify({ listening: server.address().port }));
});
