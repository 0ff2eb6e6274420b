// A taskgate client in Node: loads proto/ at run time with @grpc/proto-loader and
// walks through the RPCs and the answers a caller meets, printing one JSON line each.
//
//   npm ci && node client.js 127.0.0.1:50051
"use strict";

const path = require("node:path");
const { randomUUID } = require("node:crypto");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

// proto/ holds the contract and the google/rpc protos it imports.
const PROTO_DIR = path.resolve(__dirname, "..", "..", "proto");
const CONTRACT = "taskgate/v1/task_service.proto";
const CALL_SECONDS = 30;

// keepCase: the default turns field names into camelCase (argsJson), and a request
// built with the proto's own names (args_json) then has its fields silently dropped:
// tasks.add would run with no arguments.
const packageDefinition = protoLoader.loadSync(CONTRACT, {
  keepCase: true,
  enums: String,
  longs: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_DIR],
});
const { TaskService } = grpc.loadPackageDefinition(packageDefinition).taskgate.v1;

// The rich error details (google.rpc.Status in the grpc-status-details-bin trailer)
// are decoded with protobufjs, which proto-loader itself is built on.
const detailTypes = new protobuf.Root();
detailTypes.resolvePath = (_origin, target) => path.join(PROTO_DIR, target);
detailTypes.loadSync(["google/rpc/error_details.proto", CONTRACT], { keepCase: true });
const Status = detailTypes.lookupType("google.rpc.Status");

/** @param {number} seconds */
function duration(seconds) {
  return { seconds: String(seconds), nanos: 0 };
}

/** @returns {{deadline: Date}} */
function callOptions() {
  return { deadline: new Date(Date.now() + CALL_SECONDS * 1000) };
}

/**
 * Call a unary RPC and resolve with its reply.
 * @param {any} client @param {string} method @param {object} request
 * @returns {Promise<any>}
 */
function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, callOptions(), (/** @type {any} */ error, /** @type {any} */ reply) =>
      error ? reject(error) : resolve(reply),
    );
  });
}

/**
 * The google.rpc.Status details of a failed call, each decoded by its type URL.
 * @param {grpc.ServiceError} error
 * @returns {Array<{type: string, value: object}>}
 */
function statusDetails(error) {
  const [encoded] = error.metadata.get("grpc-status-details-bin");
  if (!encoded) return [];
  const status = Status.decode(/** @type {Buffer} */ (encoded));
  return status.details.map((/** @type {any} */ any) => {
    const type = any.type_url.split("/").pop();
    const message = detailTypes.lookupType(type).decode(any.value);
    return { type, value: message.toJSON() };
  });
}

/**
 * Run `body` and resolve with the gRPC error it rejects with.
 * @param {() => Promise<unknown>} body
 * @returns {Promise<grpc.ServiceError>}
 */
async function expectError(body) {
  try {
    await body();
  } catch (error) {
    return /** @type {grpc.ServiceError} */ (error);
  }
  throw new Error("the call succeeded but an error was expected");
}

/** @param {any} client @param {string} taskId @returns {Promise<any[]>} */
function watch(client, taskId) {
  return new Promise((resolve, reject) => {
    const updates = /** @type {any[]} */ ([]);
    const stream = client.WatchStatus({ task_id: taskId }, callOptions());
    stream.on("data", (/** @type {any} */ update) => updates.push(update.status));
    stream.on("error", reject);
    stream.on("end", () => resolve(updates));
  });
}

/** @param {object} line */
function print(line) {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

/** @param {any} client */
async function walkThrough(client) {
  const add = { task: "tasks.add", args_json: "[2, 3]" };
  const { task_id } = await unary(client, "Submit", add);
  const result = await unary(client, "GetResult", { task_id, wait: duration(10) });
  print({ step: "submit", state: result.state, result: JSON.parse(result.result_json) });

  const request = { task: "tasks.add", args_json: "[4, 5]" };
  const executed = await unary(client, "Execute", { submit: request, wait: duration(10) });
  print({ step: "execute", state: executed.state, result: JSON.parse(executed.result_json) });

  const steps = { task: "tasks.progress", args_json: "[3, 0.3]" };
  const progress = await unary(client, "Submit", steps);
  const updates = await watch(client, progress.task_id);
  const metas = updates.filter((s) => s.state_name === "PROGRESS").map((s) => JSON.parse(s.meta_json));
  print({ step: "watch", states: updates.map((s) => s.state_name), progress: metas });

  const fail = { task: "tasks.fail", args_json: '["boom"]' };
  const failed = await unary(client, "Submit", fail);
  const outcome = await unary(client, "GetResult", { task_id: failed.task_id, wait: duration(10) });
  print({ step: "error", state: outcome.state, type: outcome.error.type, message: outcome.error.message });

  const propagated = await expectError(() =>
    unary(client, "GetResult", { task_id: failed.task_id, wait: duration(10), propagate: true }),
  );
  print({ step: "propagate", code: propagated.code, details: statusDetails(propagated) });

  const unknown = await expectError(() => unary(client, "GetStatus", { task_id: randomUUID() }));
  print({ step: "not_found", code: unknown.code });

  const keyed = { task: "tasks.add", args_json: "[1, 1]", idempotency_key: randomUUID() };
  const first = await unary(client, "Submit", keyed);
  const retried = await unary(client, "Submit", keyed);
  print({ step: "idempotent", first: first.task_id, retried: retried.task_id, deduplicated: retried.deduplicated });
}

async function main() {
  const address = process.argv[2] ?? "127.0.0.1:50051";
  const client = new TaskService(address, grpc.credentials.createInsecure());
  try {
    await walkThrough(client);
  } finally {
    client.close();
  }
}

main().catch((error) => {
  process.stderr.write(`${error.stack ?? error}\n`);
  process.exit(1);
});
