'use strict';
/*
 * The Node peer: socket.io 4 speaking the same events and ack shapes as observable-chat and
 * the bare Flask-SocketIO chat (tests/bench/bare_server.py), WebSocket transport only, with
 * nothing else (no accounts, logs, metrics or rate limits).
 *
 *   node tests/bench/node_server.js <port>     (NODE_PATH must reach the scratch install)
 */

const http = require('http');
const { Server } = require('socket.io');

const port = Number(process.argv[2]);
const lastId = new Map();

const httpServer = http.createServer((request, response) => {
  if (request.url === '/healthz') {
    response.writeHead(200, { 'Content-Type': 'application/json' });
    response.end('{"status":"ok"}');
    return;
  }
  response.writeHead(404, { 'Content-Type': 'application/json' });
  response.end('{"error":"not_found"}');
});

const io = new Server(httpServer, {
  transports: ['websocket'],
  serveClient: false,
  maxHttpBufferSize: 65536,
});

const roomOf = (data) => (data && typeof data.room === 'string' && data.room ? data.room : null);
const membersOf = (room) => (io.sockets.adapter.rooms.get(room) || new Set()).size;
const reply = (ack, value) => {
  if (typeof ack === 'function') ack(value);
};
const invalid = { ok: false, error: 'invalid_payload', message: 'expected {room} / {room, text}' };

io.on('connection', (socket) => {
  socket.on('join', (data, ack) => {
    const room = roomOf(data);
    if (room === null) return reply(ack, invalid);
    socket.join(room);
    const members = membersOf(room);
    io.to(room).emit('joined', { room, user: socket.id, members });
    return reply(ack, { ok: true, room, members });
  });

  socket.on('leave', (data, ack) => {
    const room = roomOf(data);
    if (room === null) return reply(ack, invalid);
    socket.leave(room);
    io.to(room).emit('left', { room, user: socket.id, members: membersOf(room) });
    return reply(ack, { ok: true, room });
  });

  socket.on('message', (data, ack) => {
    const room = roomOf(data);
    if (room === null || typeof data.text !== 'string') return reply(ack, invalid);
    const id = (lastId.get(room) || 0) + 1;
    lastId.set(room, id);
    const ts = new Date().toISOString();
    io.to(room).emit('message', { id, room, user: 'anon', text: data.text, ts });
    return reply(ack, { ok: true, id });
  });

  socket.on('disconnecting', () => {
    for (const room of socket.rooms) {
      if (room !== socket.id) {
        socket.to(room).emit('left', { room, user: socket.id, members: membersOf(room) - 1 });
      }
    }
  });
});

httpServer.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening on 127.0.0.1:${port}\n`);
});

const stop = () => {
  io.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
