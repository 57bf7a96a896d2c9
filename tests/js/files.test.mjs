// The files module's pure parts and its HTTP requests against a stub fetch: the token of the
// moment in every request, JSON errors turned into FilesError, absolute signed URLs.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import { Files, FilesError, TUS_SCRIPT_URL, signedVariantUrl, uploadFingerprint, uploadIdOf } from "../../huddle/web/sdk/files.js";

const realFetch = globalThis.fetch;
afterEach(() => {
  globalThis.fetch = realFetch;
});

function stubFetch(respond) {
  const calls = [];
  globalThis.fetch = async (url, init = {}) => {
    calls.push({ url, method: init.method || "GET", auth: new Headers(init.headers).get("Authorization"), range: new Headers(init.headers).get("Range") });
    return respond(url, init);
  };
  return calls;
}

const json = (status, body) => new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

test("the file id of an upload URL is its last path segment", () => {
  assert.equal(uploadIdOf("http://127.0.0.1:8080/v1/media/tus/fQ3p7hO2Xx1VtM8r2Lk0aA"), "fQ3p7hO2Xx1VtM8r2Lk0aA");
  assert.equal(uploadIdOf("/v1/media/tus/abc"), "abc");
});

test("kept uploads are found per user and file", () => {
  const file = { name: "a.bin", type: "application/octet-stream", size: 10, lastModified: 5 };
  const endpoint = "http://n/v1/media/tus/";
  assert.equal(uploadFingerprint("alice", file, endpoint), uploadFingerprint("alice", { ...file }, endpoint));
  assert.notEqual(uploadFingerprint("alice", file, endpoint), uploadFingerprint("bob", file, endpoint));
  assert.notEqual(uploadFingerprint("alice", file, endpoint), uploadFingerprint("alice", { ...file, size: 11 }, endpoint));
  assert.notEqual(uploadFingerprint("alice", file, endpoint), uploadFingerprint("alice", { ...file, lastModified: 6 }, endpoint));
  assert.ok(uploadFingerprint("alice", file, endpoint).startsWith("huddle|alice|"));
});

test("thumbnail and voice URLs of a signed URL keep its signature", () => {
  const signed = "http://n:8080/v1/media/ID?exp=1767261905&sig=abc";
  assert.equal(signedVariantUrl(signed, "thumb/small"), "http://n:8080/v1/media/ID/thumb/small?exp=1767261905&sig=abc");
  assert.equal(signedVariantUrl(signed, "voice"), "http://n:8080/v1/media/ID/voice?exp=1767261905&sig=abc");
});

test("the tus client is loaded from the node, beside the SDK", () => {
  assert.ok(TUS_SCRIPT_URL.endsWith("/huddle/web/vendor/tus-js-client/tus.min.js"), TUS_SCRIPT_URL);
});

test("each request carries the token of the moment", async () => {
  const connection = { baseUrl: "http://n:8080/", token: "t1" };
  const files = new Files(connection);
  const calls = stubFetch(() => json(200, { id: "x" }));
  await files.meta("x");
  connection.token = "t2"; // refreshed
  await files.usage();
  const tokens = ["t3"];
  const viaFunction = new Files({ baseUrl: "http://n:8080", token: () => tokens[0] });
  await viaFunction.meta("y");
  assert.deepEqual(
    calls.map((c) => [c.url, c.auth]),
    [
      ["http://n:8080/v1/media/x/meta", "Bearer t1"],
      ["http://n:8080/v1/media/usage", "Bearer t2"],
      ["http://n:8080/v1/media/y/meta", "Bearer t3"],
    ],
  );
});

test("errors are FilesError with the status and the body's code", async () => {
  const files = new Files({ baseUrl: "http://n", token: "t" });
  stubFetch(() => json(404, { error: { code: "not_found", message: "no such file" } }));
  await assert.rejects(files.download("nope"), (error) => {
    assert.ok(error instanceof FilesError);
    assert.deepEqual([error.status, error.code, error.message], [404, "not_found", "no such file"]);
    return true;
  });
  stubFetch(() => new Response("<html>bad gateway</html>", { status: 502, statusText: "Bad Gateway" }));
  await assert.rejects(files.usage(), (error) => error instanceof FilesError && error.code === "http_502");
});

test("signed URLs come back absolute; ranges and deletes are sent as asked", async () => {
  const files = new Files({ baseUrl: "http://n:8080", token: "t" });
  const calls = stubFetch((url) =>
    url.endsWith("/sign") ? json(200, { url: "/v1/media/ID?exp=9&sig=s", expires_at: 9 }) : new Response("ab", { status: url.includes("DELETE") ? 204 : 206 }),
  );
  assert.deepEqual(await files.sign("ID"), { url: "http://n:8080/v1/media/ID?exp=9&sig=s", expires_at: 9 });
  const part = await files.download("ID", { range: [0, 1] });
  assert.equal(await part.text(), "ab");
  await files.delete("ID");
  assert.deepEqual(
    calls.map((c) => [c.method, c.url, c.range]),
    [
      ["POST", "http://n:8080/v1/media/ID/sign", null],
      ["GET", "http://n:8080/v1/media/ID", "bytes=0-1"],
      ["DELETE", "http://n:8080/v1/media/ID", null],
    ],
  );
});

/** A stand-in for tus-js-client: records what the upload does; `previous` answers findPreviousUploads. */
function fakeTus(previous = Promise.resolve([])) {
  const log = [];
  globalThis.tus = {
    Upload: class {
      constructor(file, options) {
        this.options = options;
        this.url = null;
      }
      findPreviousUploads() {
        log.push("find");
        return previous;
      }
      resumeFromPreviousUpload(p) {
        this.url = p.uploadUrl;
        log.push(`resume ${p.uploadUrl}`);
      }
      start() {
        log.push("start");
      }
      abort(terminate) {
        log.push(terminate && this.url ? `terminate ${this.url}` : `abort ${terminate}`);
        return Promise.resolve();
      }
    },
  };
  return log;
}

afterEach(() => {
  delete globalThis.tus;
});

test("an upload aborted right after startUpload never starts; done rejects with aborted", async () => {
  let found;
  const log = fakeTus(new Promise((resolve) => (found = resolve)));
  const files = new Files({ baseUrl: "http://n", token: "t", identity: "ada" });
  const upload = await files.startUpload(new Blob(["hello"]), { name: "a.txt" });
  const aborting = upload.abort(true);
  found([{ uploadUrl: "http://n/v1/media/tus/OLD", creationTime: "2026-01-01T00:00:00Z" }]);
  await aborting;
  await assert.rejects(upload.done, (e) => e instanceof FilesError && e.code === "aborted");
  // The earlier upload it would have gone on with is dropped on the node, and nothing starts.
  assert.deepEqual(log, ["find", "resume http://n/v1/media/tus/OLD", "terminate http://n/v1/media/tus/OLD"]);

  // retry() after such an abort begins for real.
  const again = upload.retry();
  await new Promise((r) => setTimeout(r, 1));
  assert.equal(log.at(-1), "start");
  upload.abort(false);
  await assert.rejects(again, (e) => e.code === "aborted");
});

test("aborting an upload under way settles done (it hung)", async () => {
  const log = fakeTus();
  const files = new Files({ baseUrl: "http://n", token: "t", identity: "ada" });
  const upload = await files.startUpload(new Blob(["hello"]), { name: "a.txt" });
  await new Promise((r) => setTimeout(r, 1));
  assert.deepEqual(log, ["find", "start"]);
  await upload.abort();
  await assert.rejects(upload.done, (e) => e instanceof FilesError && e.code === "aborted" && e.status === 0);
  assert.deepEqual(log, ["find", "start", "abort false"]);
});
