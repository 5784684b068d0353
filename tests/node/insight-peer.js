// A stand-in for Insight's websocket, on the real socket.io 2.4.1 server Insight runs
// (dashcore-node's web service attaches socket.io with its defaults; insight-api's `inv`
// stream is a set of sockets that emitted `subscribe` `inv`). Used by
// tests/interop/test_socketio_interop.py to prove dashpay's EIO3 client against it.
//
// argv/env:  --port N (PEER_PORT, default 0 = any free port)
//            --ping-interval MS (PEER_PING_INTERVAL, default 25000)
//            --ping-timeout MS (PEER_PING_TIMEOUT, default 5000, socket.io 2.4.1's default)
// stdout (one line each, for the test to synchronise on):
//   listening <port>                  server is up (on 127.0.0.1 only)
//   subscribed <count>                a socket subscribed to inv; <count> = subscribers now
//   emitted <event> <count>           an `emit` command went to <count> subscribers
//   sent <count>                      a `raw` command went to <count> engine connections
//   closed <engine id> <reason>       an engine.io connection ended (e.g. "ping timeout")
//   flooded <count> <subscribers>     a `flood` command emitted <count> events to each
//   stats <json>                      answer to the `stats` command (see below)
//   error <message>                   a command could not be understood
// stdin, one JSON object per line:
//   {"emit": "tx"|"txlock"|"block"|<any>, "payload": <json>}  emit to inv subscribers
//   {"raw": "<engine.io frame>"}  send a frame as is on every engine connection
//   {"flood": N, "payload": <tx json>}  emit N `tx` events in one go (socket.io queues
//                    them and ws writes them back to back); event i carries the txid
//                    i as 64 hex digits
//   {"stats": true}  print per-engine-connection counts: namespace sockets open now,
//                    namespace connects ever (a client `40` makes this 2), pings received
'use strict';

const http = require('http');
const readline = require('readline');
const socketio = require('socket.io');

function option(flag, envName, fallback) {
  const index = process.argv.indexOf(flag);
  if (index >= 0 && index + 1 < process.argv.length) return Number(process.argv[index + 1]);
  if (process.env[envName]) return Number(process.env[envName]);
  return fallback;
}

const port = option('--port', 'PEER_PORT', 0);
const pingInterval = option('--ping-interval', 'PEER_PING_INTERVAL', 25000);
const pingTimeout = option('--ping-timeout', 'PEER_PING_TIMEOUT', 5000);

function out(line) {
  process.stdout.write(line + '\n');
}

const server = http.createServer();
const io = socketio(server, { pingInterval, pingTimeout, serveClient: false });

const inv = new Set(); // namespace sockets subscribed to `inv`
const engines = new Map(); // engine id -> {conn, connects, pings}

io.engine.on('connection', (conn) => {
  const info = { conn, connects: 0, pings: 0 };
  engines.set(conn.id, info);
  conn.on('packet', (packet) => {
    if (packet.type === 'ping') info.pings += 1;
  });
  conn.on('close', (reason) => {
    engines.delete(conn.id);
    out(`closed ${conn.id} ${reason}`);
  });
});

io.on('connection', (socket) => {
  const info = engines.get(socket.conn.id);
  if (info) info.connects += 1;
  socket.on('subscribe', (name) => {
    if (name === 'inv' && !inv.has(socket)) {
      inv.add(socket);
      out(`subscribed ${inv.size}`);
    }
  });
  socket.on('unsubscribe', (name) => {
    if (name === 'inv') inv.delete(socket);
  });
  socket.on('disconnect', () => inv.delete(socket));
});

const FRAME_TYPES = { 0: 'open', 1: 'close', 2: 'ping', 3: 'pong', 4: 'message', 5: 'upgrade', 6: 'noop' };

function stats() {
  const connections = {};
  for (const [id, info] of engines) {
    const open = Object.values(io.of('/').connected).filter((s) => s.conn.id === id).length;
    connections[id] = { namespace_sockets: open, namespace_connects: info.connects, pings: info.pings };
  }
  return { connections, subscribed: inv.size };
}

function handle(command) {
  if (command.emit !== undefined) {
    for (const socket of inv) socket.emit(command.emit, command.payload);
    out(`emitted ${command.emit} ${inv.size}`);
  } else if (command.flood !== undefined) {
    for (let i = 0; i < command.flood; i += 1) {
      const payload = Object.assign({}, command.payload, { txid: i.toString(16).padStart(64, '0') });
      for (const socket of inv) socket.emit('tx', payload);
    }
    out(`flooded ${command.flood} ${inv.size}`);
  } else if (command.raw !== undefined) {
    const type = FRAME_TYPES[command.raw[0]];
    if (!type) throw new Error(`raw frame must start with an engine.io type digit: ${command.raw}`);
    for (const info of engines.values()) info.conn.sendPacket(type, command.raw.slice(1));
    out(`sent ${engines.size}`);
  } else if (command.stats) {
    out(`stats ${JSON.stringify(stats())}`);
  } else {
    throw new Error(`unknown command ${JSON.stringify(command)}`);
  }
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (!line.trim()) return;
  try {
    handle(JSON.parse(line));
  } catch (err) {
    out(`error ${err.message}`);
  }
}).on('close', () => process.exit(0));

server.listen(port, '127.0.0.1', () => out(`listening ${server.address().port}`));
