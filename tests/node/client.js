// A short session of the npm etcd3 client (a third-party etcd v3 library over
// gRPC): put, get, watch, lease (grant, attach, keep-alive, revoke) and txn.
// Usage: node client.js ENDPOINT. Prints one JSON object of what it saw;
// tests/integration/test_node_client.py runs it against etcd and against
// etcdfs-server, checks the values and requires both objects to be equal.
// Lease ids are left out (each server picks its own); revisions are kept
// (both servers start fresh).
'use strict';

const { Etcd3 } = require('etcd3');

const endpoint = process.argv[2];
if (!endpoint) {
  console.error('usage: node client.js ENDPOINT');
  process.exit(2);
}

// Never hang the test: the whole session gets 60 s.
setTimeout(() => {
  console.error('client.js: timed out');
  process.exit(3);
}, 60000).unref();

const str = (b) => (b === undefined || b === null ? null : b.toString());

function event(type, kv, prev) {
  return {
    type,
    key: str(kv.key),
    value: str(kv.value),
    mod: Number(kv.mod_revision),
    prev: prev ? str(prev.value) : null,
  };
}

// Resolves with the first n events a watcher reports (put and delete).
function collect(watcher, n) {
  const seen = [];
  return new Promise((resolve, reject) => {
    const add = (type) => (kv, prev) => {
      seen.push(event(type, kv, prev));
      if (seen.length === n) resolve(seen);
    };
    watcher.on('put', add('put'));
    watcher.on('delete', add('delete'));
    watcher.on('error', reject);
  });
}

function within(ms, promise, what) {
  let t;
  const timeout = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}

async function kv(client, out) {
  await client.put('node/a').value('1');
  await client.put('node/b').value('2');
  const put = await client.put('node/a').value('3').exec();
  out.put_revision = Number(put.header.revision);
  out.get = await client.get('node/a').string();
  out.get_missing = await client.get('node/none').string();
  out.prefix = await client.getAll().prefix('node/').strings();
  out.count = await client.getAll().prefix('node/').count();
  out.keys_desc = await client.getAll().prefix('node/').sort('Key', 'Descend').keys();
}

async function watch(client, out) {
  const w = await client.watch().prefix('node/w/').withPreviousKV().create();
  const events = collect(w, 3);
  await client.put('node/w/x').value('1');
  await client.put('node/w/x').value('2');
  await client.delete().key('node/w/x');
  out.watch = await within(20000, events, 'watch');
  await w.cancel();
  // a watch from the past: the history of node/a from revision 2
  const h = await client.watch().key('node/a').startRevision('2').create();
  out.watch_history = await within(20000, collect(h, 2), 'watch from revision 2');
  await h.cancel();
}

async function lease(client, out) {
  const l = client.lease(3); // the client renews every ttl/3 = 1 s on its own
  const lost = [];
  l.on('lost', (err) => lost.push(String(err)));
  const renewed = new Promise((resolve) => l.once('keepaliveSucceeded', resolve));
  const id = await l.grant();
  await l.put('node/l/1').value('x');
  await l.put('node/l/2').value('y');
  out.lease_keys = await client.getAll().prefix('node/l/').keys();
  const ka = await within(20000, renewed, 'automatic keep-alive');
  out.lease_keepalive_ttl = Number(ka.TTL);
  const once = await l.keepaliveOnce();
  out.lease_keepalive_once_ttl = Number(once.TTL);
  // 4 s: past the 3 s TTL, so only the renewals keep it
  await new Promise((resolve) => setTimeout(resolve, 4000));
  out.lease_keys_after_4s = await client.getAll().prefix('node/l/').keys();
  const ttl = await client.leaseClient.leaseTimeToLive({ ID: id, keys: true });
  out.lease_ttl = {
    granted: Number(ttl.grantedTTL),
    alive: Number(ttl.TTL) > 0,
    keys: ttl.keys.map(str).sort(),
  };
  const w = await client.watch().prefix('node/l/').create();
  const deletes = collect(w, 2);
  await l.revoke();
  out.lease_revoke_events = await within(20000, deletes, 'deletes on revoke');
  await w.cancel();
  out.lease_keys_after_revoke = await client.getAll().prefix('node/l/').keys();
  const gone = await client.leaseClient.leaseTimeToLive({ ID: id });
  out.lease_ttl_after_revoke = Number(gone.TTL);
  out.lease_lost = lost;
}

async function txn(client, out) {
  const yes = await client
    .if('node/a', 'Value', '==', '3')
    .then(client.put('node/t').value('then'), client.get('node/b'))
    .else(client.put('node/t').value('else'))
    .commit();
  out.txn_then = {
    succeeded: yes.succeeded,
    got: yes.responses[1].response_range.kvs.map((x) => str(x.value)),
  };
  out.txn_then_value = await client.get('node/t').string();
  const no = await client
    .if('node/a', 'Mod', '>', 1000)
    .and('node/b', 'Version', '==', 1)
    .then(client.put('node/t').value('then'))
    .else(client.put('node/t').value('else'), client.delete().key('node/b'))
    .commit();
  out.txn_else = { succeeded: no.succeeded, revision: Number(no.header.revision) };
  out.txn_else_value = await client.get('node/t').string();
  out.txn_else_b = await client.get('node/b').string();
}

async function main() {
  const client = new Etcd3({ hosts: endpoint });
  const out = {};
  try {
    await kv(client, out);
    await watch(client, out);
    await lease(client, out);
    await txn(client, out);
    const all = await client.getAll().prefix('node/').exec();
    out.final_revision = Number(all.header.revision);
    out.final = Object.fromEntries(all.kvs.map((x) => [str(x.key), str(x.value)]));
  } finally {
    client.close();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((err) => {
  console.error('client.js:', err && err.stack ? err.stack : err);
  process.exit(1);
});
