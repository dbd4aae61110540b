// CORS on examples/cms's publish API (PROTOCOL.md §8): a browser dashboard
// on an allowed origin (CORS_ORIGINS; the example's default is
// http://localhost:3000) gets its preflight answered; another origin gets
// no CORS headers. Plain node:http requests, so that any Origin can be sent.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { startExample, token } from "./harness.mjs";

let ex;

before(async () => {
  ex = await startExample();
});

after(async () => {
  await ex?.close();
});

function request(method, path, headers, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(`${ex.url}${path}`, { method, headers }, (res) => {
      res.resume();
      res.on("end", () => resolve(res));
    });
    req.on("error", reject);
    req.end(body);
  });
}

const preflight = (path, origin) =>
  request("OPTIONS", path, {
    Origin: origin,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type",
  });

const corsHeaders = (res) => Object.keys(res.headers).filter((h) => h.startsWith("access-control-"));

for (const path of ["/api/v1/notify", "/api/v1/posts/1/events", "/api/v1/presence"]) {
  test(`preflight of ${path}: allowed origin answered, another origin gets no CORS headers`, async () => {
    const ok = await preflight(path, "http://localhost:3000");
    assert.equal(ok.statusCode, 204);
    assert.equal(ok.headers["access-control-allow-origin"], "http://localhost:3000");
    assert.match(ok.headers["access-control-allow-methods"], /POST/);
    assert.match(ok.headers["access-control-allow-headers"].toLowerCase(), /authorization/);

    const evil = await preflight(path, "https://evil.example");
    assert.notEqual(evil.statusCode, 204);
    assert.deepEqual(corsHeaders(evil), []);
  });
}

test("a notify from the allowed origin carries its CORS header; from another origin it is refused", async () => {
  const headers = (origin) => ({
    Origin: origin,
    Authorization: `Bearer ${token({ sub: "backend", scope: "publish", tenant: "cors" })}`,
    "Content-Type": "application/json",
  });
  const ok = await request("POST", "/api/v1/notify", headers("http://localhost:3000"), JSON.stringify({ event: "e" }));
  assert.equal(ok.statusCode, 200);
  assert.equal(ok.headers["access-control-allow-origin"], "http://localhost:3000");
  const evil = await request("POST", "/api/v1/notify", headers("https://evil.example"), JSON.stringify({ event: "e" }));
  assert.equal(evil.statusCode, 403);
  assert.deepEqual(corsHeaders(evil), []);
});
