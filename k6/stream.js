// Streamed chat completions: each virtual user holds one stream at a time.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e MODEL=bench-model -e VUS=500 \
//     -e DURATION=30s -e CHUNKS=20 -e INTERVAL_MS=50 k6/stream.js
//
// k6's HTTP client returns a response once it is complete, so this script measures
// time to first byte (http_req_waiting ~ time to the first event) and whole-stream
// duration, and checks that every stream carried every content chunk and [DONE].
// CHUNKS / INTERVAL_MS are sent in the request's "mock" field, which the fastgw mock
// upstream obeys (the gateway forwards it untouched); a real upstream ignores them, then
// set CHUNKS=0 to skip the chunk-count check.
//
// Env: BASE_URL (default http://127.0.0.1:8080), MODEL (default bench-model),
//      API_KEY (default sk-bench-client), VUS (default 100), DURATION (default 20s),
//      CHUNKS (default 20), INTERVAL_MS (default 50).
import http from "k6/http";
import { check } from "k6";
import { Counter, Rate, Trend } from "k6/metrics";

const BASE_URL = (__ENV.BASE_URL || "http://127.0.0.1:8080").replace(/\/+$/, "");
const MODEL = __ENV.MODEL || "bench-model";
const API_KEY = __ENV.API_KEY || "sk-bench-client";
const CHUNKS = parseInt(__ENV.CHUNKS || "20", 10);
const INTERVAL_MS = parseFloat(__ENV.INTERVAL_MS || "50");

export const options = {
  vus: parseInt(__ENV.VUS || "100", 10),
  duration: __ENV.DURATION || "20s",
  thresholds: {
    stream_lossless: ["rate>0.999"],
    http_req_failed: ["rate<0.01"],
  },
};

const lossless = new Rate("stream_lossless");
const contentChunks = new Counter("stream_content_chunks");
const firstByte = new Trend("stream_first_byte", true);

const URL = `${BASE_URL}/v1/chat/completions`;
const request = {
  model: MODEL,
  stream: true,
  messages: [{ role: "user", content: "Stream a hello to the benchmark" }],
};
if (CHUNKS > 0) {
  request.mock = { chunks: CHUNKS, interval_ms: INTERVAL_MS };
}
const BODY = JSON.stringify(request);
const PARAMS = {
  headers: { "Content-Type": "application/json", Authorization: `Bearer ${API_KEY}` },
  timeout: "120s",
  tags: { name: "stream" },
};

function countContent(body) {
  let content = 0;
  let done = false;
  for (const block of body.split("\n\n")) {
    const line = block.trim();
    if (!line.startsWith("data:")) continue;
    const data = line.slice(5).trim();
    if (data === "[DONE]") {
      done = true;
      continue;
    }
    let event;
    try {
      event = JSON.parse(data);
    } catch (e) {
      continue;
    }
    const choice = (event.choices || [])[0];
    if (choice && choice.delta && "content" in choice.delta && !("role" in choice.delta)) {
      content += 1;
    }
  }
  return [content, done];
}

export default function () {
  const res = http.post(URL, BODY, PARAMS);
  firstByte.add(res.timings.waiting);
  const [content, done] = res.status === 200 && res.body ? countContent(res.body) : [0, false];
  contentChunks.add(content);
  const ok = res.status === 200 && done && (CHUNKS <= 0 || content === CHUNKS);
  lossless.add(ok);
  check(res, {
    "status is 200": (r) => r.status === 200,
    "every chunk and [DONE]": () => ok,
  });
}
