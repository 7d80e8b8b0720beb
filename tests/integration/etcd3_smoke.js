// etcd3_smoke.js: put, get, txn, watch, lease and delete through the etcd3 npm package (a
// third-party etcd client on grpc-js), for test_grpc.py::test_node_etcd3_client. Prints one line
// per step; the test requires the same lines from etcd 3.4 and from etcdfs-server.
const { Etcd3 } = require('etcd3');
const ep = process.argv[2];
const client = new Etcd3({ hosts: ep });
(async () => {
  const out = [];
  await client.put('n/a').value('1');
  out.push('get ' + await client.get('n/a').string());
  const all = await client.getAll().prefix('n/').strings();
  out.push('getAll ' + JSON.stringify(all));
  const res = await client.if('n/a', 'Value', '==', '1').then(client.put('n/b').value('2')).else(client.put('n/c').value('3')).commit();
  out.push('txn ' + res.succeeded);
  const w = await client.watch().prefix('n/').create();
  const seen = new Promise(r => w.on('put', kv => r(kv.key.toString() + '=' + kv.value.toString())));
  await client.put('n/w').value('watched');
  out.push('watch ' + await seen);
  await w.cancel();
  const lease = client.lease(10);
  await lease.put('n/l').value('leased');
  out.push('keepalive ttl ' + ((await lease.keepaliveOnce()).TTL > 0));
  out.push('leased get ' + await client.get('n/l').string());
  await lease.revoke();
  out.push('after revoke ' + await client.get('n/l').string());
  out.push('delete ' + (await client.delete().prefix('n/')).deleted);
  console.log(out.join('\n'));
  client.close();
})().catch(e => { console.error('ERROR', e); process.exit(1); });
