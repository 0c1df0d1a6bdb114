// Non-stream chat completions at a fixed number of virtual users (closed loop).
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e MODEL=bench-model -e VUS=64 -e DURATION=10s \
//     k6/chat.js
//
// Env: BASE_URL (default http://127.0.0.1:8080), MODEL (default bench-model),
//      API_KEY (default sk-bench-client), VUS (default 32), DURATION (default 10s),
//      PROMPT (default "Say hello to the benchmark").
import http from "k6/http";
import { check } from "k6";

const BASE_URL = (__ENV.BASE_URL || "http://127.0.0.1:8080").replace(/\/+$/, "");
const MODEL = __ENV.MODEL || "bench-model";
const API_KEY = __ENV.API_KEY || "sk-bench-client";

export const options = {
  vus: parseInt(__ENV.VUS || "32", 10),
  duration: __ENV.DURATION || "10s",
  discardResponseBodies: false,
  thresholds: {
    http_req_failed: ["rate<0.01"],
    checks: ["rate>0.99"],
  },
};

const URL = `${BASE_URL}/v1/chat/completions`;
const BODY = JSON.stringify({
  model: MODEL,
  messages: [{ role: "user", content: __ENV.PROMPT || "Say hello to the benchmark" }],
});
const PARAMS = {
  headers: { "Content-Type": "application/json", Authorization: `Bearer ${API_KEY}` },
  tags: { name: "chat" },
};

export default function () {
  const res = http.post(URL, BODY, PARAMS);
  check(res, {
    "status is 200": (r) => r.status === 200,
    "is a chat.completion": (r) => r.body !== null && r.body.indexOf('"chat.completion"') >= 0,
  });
}
