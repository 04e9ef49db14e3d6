// A node-redis session against cache-node's RESP port, the checks of ../scenario.py:
// authentication, strings, expiry, transactions, pipelines, the key walk and both protocols.
// Exits non-zero (an AssertionError) on the first reply that differs from what Redis answers.
//
// node-redis rather than ioredis: it is Redis' own client, its core package @redis/client has
// no dependencies (one package for `npm ci` to fetch), and it speaks RESP3 by default (HELLO 3
// AUTH ... at connect), which the redis-py and redis-cli tests leave to a second connection.
//
// Usage: node scenario.mjs PORT PASSWORD (run from a directory where `npm ci` installed
// package-lock.json; cache-node/tests/resp_node.rs copies it there).
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { createClient, ErrorReply, WatchError } from '@redis/client';

const [port, password] = [Number(process.argv[2]), process.argv[3]];
const client = (options) =>
  createClient({ socket: { port, host: '127.0.0.1', reconnectStrategy: false }, ...options });
const now = () => Date.now() / 1000;

// Authentication: refused without the token, accepted with it (user "default" implied).
const anonymous = await client({ RESP: 2 }).connect();
await assert.rejects(anonymous.get('k'), (e) => e instanceof ErrorReply && /^NOAUTH/.test(e.message));
await anonymous.close();
await assert.rejects(client({ RESP: 2, password: 'wrong' }).connect(), { message: /^WRONGPASS/ });
await assert.rejects(client({ password: 'wrong' }).connect(), { message: /^WRONGPASS/ });

const r = await client({ password, name: 'scenario' }).connect();
assert.equal(await r.ping(), 'PONG');
assert.equal(await r.clientGetName(), 'scenario');
assert.equal(await r.echo('hi'), 'hi');

// Strings.
assert.equal(await r.set('greeting', 'hello'), 'OK');
assert.equal(await r.get('greeting'), 'hello');
assert.equal(await r.set('greeting', 'again', { condition: 'NX' }), null);
assert.equal(await r.set('missing', 'x', { condition: 'XX' }), null);
assert.equal(await r.set('greeting', 'world', { GET: true }), 'hello');
assert.equal(await r.getSet('greeting', 'hi'), 'world');
assert.equal(await r.append('greeting', '!'), 3);
assert.equal(await r.strLen('greeting'), 3);
assert.equal(await r.getRange('greeting', 0, 1), 'hi');
assert.equal(await r.setRange('greeting', 1, 'o'), 3);
assert.equal(await r.get('greeting'), 'ho!');
assert.equal(await r.incr('counter'), 1);
assert.equal(await r.incrBy('counter', 41), 42);
assert.equal(await r.decr('counter'), 41);
assert.equal(await r.decrBy('counter', 40), 1);
assert.equal(await r.incrByFloat('float', 2.5), '2.5');
await assert.rejects(r.incr('greeting'), { message: 'ERR value is not an integer or out of range' });
assert.equal(await r.mSet({ a: '1', b: '2' }), 'OK');
assert.deepEqual(await r.mGet(['a', 'b', 'nope']), ['1', '2', null]);
assert.equal(await r.mSetNX({ a: '3', c: '3' }), 0);
assert.equal(await r.setNX('c', '3'), 1);
assert.equal(await r.getDel('c'), '3');
assert.equal(await r.exists(['a', 'b', 'c']), 2);
assert.equal(await r.type('a'), 'string');
assert.equal(await r.type('c'), 'none');
assert.equal(await r.del(['a', 'b', 'c']), 2);

// Expiry.
assert.equal(await r.set('session', 's', { expiration: { type: 'EX', value: 100 } }), 'OK');
const ttl = await r.ttl('session');
assert.ok(ttl >= 99 && ttl <= 100, `TTL ${ttl}`);
const pttl = await r.pTTL('session');
assert.ok(pttl >= 99_000 && pttl <= 100_000, `PTTL ${pttl}`);
assert.equal(await r.expire('session', 200, 'GT'), 1);
assert.equal(await r.expire('session', 300, 'LT'), 0);
assert.ok(Math.abs((await r.expireTime('session')) - (now() + 200)) < 3);
assert.equal(await r.persist('session'), 1);
assert.equal(await r.ttl('session'), -1);
assert.equal(await r.ttl('nope'), -2);
assert.equal(await r.getEx('session', { type: 'PX', value: 1500 }), 's');
const short = await r.pTTL('session');
assert.ok(short >= 1_000 && short <= 1_500, `PTTL ${short}`);
assert.equal(await r.setEx('short', 1, 'v'), 'OK');
assert.equal(await r.pSetEx('short2', 300, 'v'), 'OK');
await sleep(1600);
assert.deepEqual(await r.mGet(['short', 'short2', 'session']), [null, null, null]);
const at = Math.floor(now()) + 100;
assert.equal(await r.set('gone', 'v', { expiration: { type: 'EXAT', value: at } }), 'OK');
assert.equal(await r.expire('gone', -1), 1);
assert.equal(await r.exists('gone'), 0);

// Transactions.
await r.set('balance', '10');
await r.watch('balance');
const current = Number(await r.get('balance'));
assert.deepEqual(await r.multi().set('balance', String(current - 3)).incr('withdrawals').exec(), ['OK', 1]);
assert.equal(await r.get('balance'), '7');
const other = await r.duplicate({ name: 'other' }).connect();
await r.watch('balance');
await other.set('balance', '100');
await assert.rejects(r.multi().set('balance', '0').exec(), WatchError);
assert.equal(await r.get('balance'), '100');
await other.close();

// Pipelines without a transaction: 1000 commands, replies in order.
const pipe = r.multi();
for (let i = 0; i < 500; i++) pipe.set(`p:${i}`, String(i)).get(`p:${i}`);
const replies = await pipe.execAsPipeline();
assert.deepEqual(replies, Array.from({ length: 500 }, (_, i) => ['OK', String(i)]).flat());

// The key walk.
const walked = new Set();
for await (const keys of r.scanIterator({ MATCH: 'p:*', COUNT: 50 })) keys.forEach((k) => walked.add(k));
assert.equal(walked.size, 500);
assert.equal((await r.keys('p:1*')).length, 111);
assert.equal(await r.dbSize(), 500 + 5);
assert.notEqual(await r.randomKey(), null);
assert.match(await r.info('server'), /redis_version:/);
assert.deepEqual(await r.configGet('maxmemory-policy'), { 'maxmemory-policy': 'allkeys-lru' });
await r.select(0); // resolves with nothing: a refusal would throw

// RESP2 (the connection above negotiated RESP3).
const r2 = await client({ RESP: 2, password }).connect();
assert.equal(await r2.get('p:7'), '7');
assert.equal(await r2.get('nope'), null);
assert.deepEqual(await r2.configGet('databases'), { databases: '1' });
assert.equal(await r2.ttl('p:7'), -1);
await r2.close();
await r.close();
console.log('scenario passed');
