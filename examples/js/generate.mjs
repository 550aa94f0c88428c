// Make an image through the bot's HTTP API, follow it, save its files and check the signed webhook.
//
// Node 18 or later, no npm package (built-in fetch, http and crypto):
//
//   node generate.mjs --api https://bot.example.com --key cfb_... --prompt "a lighthouse at dusk"
//
// It listens for the webhook on --listen (default 127.0.0.1:8765); the bot must be able to reach it at
// --hook-url (default http://<listen>/hook). Every wait is bounded by --timeout (seconds). Exit status 0
// when the files are saved and the webhook's signature is right.

import { createHmac, timingSafeEqual } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const TOLERANCE = 300; // seconds between the webhook's timestamp and our clock that we accept

// Whether a webhook is genuine and recent: X-Webhook-Signature is "v1=" and the hex HMAC-SHA256 of
// "<X-Webhook-Timestamp>.<raw body>" keyed with the secret (several, comma-separated, while it rotates).
export function verify(secret, timestamp, body, signature, now) {
  if (!/^\d+$/.test(timestamp) || Math.abs(now - Number(timestamp)) > TOLERANCE) return false;
  const mac = createHmac("sha256", secret).update(`${timestamp}.`).update(body).digest("hex");
  const expected = Buffer.from(`v1=${mac}`);
  return signature.split(",").some((part) => {
    const given = Buffer.from(part.trim());
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}

async function call(method, url, key, body) {
  const answer = await fetch(url, {
    method,
    headers: { Authorization: `Bearer ${key}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(30_000),
  });
  if (!answer.ok) { // the API explains every refusal in JSON
    const text = await answer.text();
    let message = text;
    try { message = JSON.parse(text).error.message; } catch { /* not JSON: the text as it is */ }
    throw new Error(`${method} ${url}: ${answer.status} ${message}`);
  }
  return answer;
}

// A tiny server that hands every POST's headers and raw body to `take`.
function receiveWebhooks(listen, take) {
  const at = listen.lastIndexOf(":");
  const server = createServer((request, response) => {
    const chunks = [];
    request.on("data", (chunk) => chunks.push(chunk));
    request.on("end", () => {
      take(request.headers, Buffer.concat(chunks));
      response.writeHead(204).end();
    });
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(Number(listen.slice(at + 1)), listen.slice(0, at), () => resolve(server));
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  const { values: args } = parseArgs({ options: {
    api: { type: "string", default: process.env.COMFY_API_URL ?? "http://127.0.0.1:8080" },
    key: { type: "string", default: process.env.COMFY_API_KEY },
    prompt: { type: "string", default: "a lighthouse at dusk, oil painting" },
    size: { type: "string", default: "512" },
    out: { type: "string", default: "." },
    listen: { type: "string", default: "127.0.0.1:8765" },
    "hook-url": { type: "string" },
    poll: { type: "string", default: "1" },
    timeout: { type: "string", default: "600" },
  } });
  if (!args.key) throw new Error("give --key or COMFY_API_KEY");
  const api = `${args.api.replace(/\/+$/, "")}/api/v1`;
  const deadline = Date.now() + Number(args.timeout) * 1000;

  const hooks = [];
  let arrived = () => {};
  const server = await receiveWebhooks(args.listen, (headers, body) => { hooks.push({ headers, body }); arrived(); });
  const { address, port } = server.address();
  const hookUrl = args["hook-url"] ?? `http://${address}:${port}/hook`;
  const { secret } = await (await call("PUT", `${api}/webhook`, args.key, { url: hookUrl })).json();
  console.log(`webhook set to ${hookUrl}`);

  const size = Number(args.size);
  const request = { kind: "txt2img", prompt: args.prompt, width: size, height: size };
  const { id } = await (await call("POST", `${api}/generations`, args.key, request)).json();
  console.log(`queued generation ${id}`);

  let state = {};
  let seen = null;
  while (Date.now() < deadline) {
    state = await (await call("GET", `${api}/generations/${id}`, args.key)).json();
    if (state.state !== seen) console.log(`state: ${(seen = state.state)}`);
    if (["done", "failed", "cancelled"].includes(seen)) break;
    await sleep(Number(args.poll) * 1000);
  }
  if (state.state !== "done") throw new Error(`generation ${id} did not finish: ${state.error ?? state.state}`);

  await mkdir(args.out, { recursive: true });
  for (const [index, url] of state.files.entries()) {
    const data = Buffer.from(await (await call("GET", url, args.key)).arrayBuffer());
    const path = join(args.out, `generation-${id}-${index}.png`);
    await writeFile(path, data);
    console.log(`saved ${path} (${data.length} bytes)`);
  }

  let hook; // the webhook of this generation; others (earlier ones of the key) are skipped
  while (!(hook = hooks.find((h) => JSON.parse(h.body).id === id))) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error("no webhook arrived in time");
    const timer = new Promise((resolve) => setTimeout(resolve, left).unref()); // unref: no wait after
    await Promise.race([new Promise((resolve) => { arrived = resolve; }), timer]);
  }
  const { headers, body } = hook;
  const ok = verify(secret, headers["x-webhook-timestamp"] ?? "", body, headers["x-webhook-signature"] ?? "",
                    Date.now() / 1000);
  if (!ok) throw new Error("the webhook's signature is wrong: ignore it");
  console.log(`webhook ${JSON.parse(body).event} for generation ${id}: signature verified`);
  server.close();
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) { // run, not imported for verify()
  main().catch((error) => {
    console.error(error.message);
    process.exit(1);
  });
}
