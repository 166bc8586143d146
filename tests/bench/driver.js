'use strict';
/*
 * The benchmark driver: one lean Socket.IO client process that drives every server of the
 * suite (observable-chat, the bare Flask-SocketIO chat, Node socket.io) with the same code.
 *
 * It speaks Engine.IO v4 + Socket.IO v5 over WebSocket only, by hand: `0{...}` open -> `40`,
 * `40{"sid"}` connected, `42["name",data]` events, `42<id>[...]` emits answered by
 * `43<id>[data]` acks, ping `2` answered by `3`, over the `ws` package's WebSocket client
 * (no compression, no UTF-8 validation). A `message` event is read straight from the frame's
 * bytes (`fastMessage`); other packets are parsed as JSON.
 *
 * Usage: node driver.js '<json config>'   (run by tests/bench/suite.py, pinned to CPU 1)
 * It runs one workload and prints one JSON object on stdout.
 *
 * Every message it sends carries its own sequence number in its text (`<seq>:...`). Each
 * receiving connection keeps one byte per sequence number: a delivery is counted once, a
 * second one is a duplicate, a sequence number never sent is unexpected, and after draining
 * `sent * members - deliveries` is what went missing. The server's message id of each
 * delivery is checked against the id the ack returned for the same sequence number.
 *
 * Every loop is bounded by a count (`max_messages`, connection counts) and by time
 * (durations, `drain_s`, connect timeouts); the orchestrator also kills a driver that outlives
 * its deadline.
 */

const fs = require('fs');
const http = require('http');
const { performance } = require('perf_hooks');
const WebSocket = require('ws');

const cfg = JSON.parse(process.argv[2] || '{}');
const CLK_TCK = cfg.clk_tck || 100;
const now = () => performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// A message's text: its sequence number in 7 digits, a colon, padding (40 characters).
const TEXT_PAD = 'x'.repeat(Math.max(0, (cfg.text_length || 40) - 8));
const textOf = (seq) => `${String(seq).padStart(7, '0')}:${TEXT_PAD}`;
const TEXT_LENGTH = textOf(0).length;

// -- the processes under test -------------------------------------------------------------------
function procCpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime + stime (fields 14, 15)
}

function procRssKb(pid) {
  const match = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) : 0;
}

const serverPids = cfg.server_pids || [];
const pinnedCpus = new Set((cfg.cpus || []).map((cpu) => `cpu${cpu}`));

// The pinned CPUs' user + nice + system time, and their steal time, in seconds: what anything
// but the server and the driver used of them is the first minus those two processes' time.
function cpusBusy() {
  let busy = 0;
  let steal = 0;
  for (const line of fs.readFileSync('/proc/stat', 'utf8').split('\n')) {
    const fields = line.split(' ');
    if (!pinnedCpus.has(fields[0])) continue;
    busy += Number(fields[1]) + Number(fields[2]) + Number(fields[3]);
    steal += Number(fields[8]);
  }
  return { busy: busy / CLK_TCK, steal: steal / CLK_TCK };
}

function snapshot(tracker) {
  const cpu = process.cpuUsage();
  const cpus = cpusBusy();
  return {
    t: now(),
    driverCpu: (cpu.user + cpu.system) / 1e6,
    serverCpu: serverPids.reduce((sum, pid) => sum + procCpuSeconds(pid), 0),
    cpusBusy: cpus.busy,
    cpusSteal: cpus.steal,
    deliveries: tracker ? tracker.deliveries : 0,
    acked: tracker ? tracker.acked : 0,
  };
}

function windowOf(a, b) {
  const seconds = (b.t - a.t) / 1000;
  return {
    seconds,
    driver_cpu_pct: (100 * (b.driverCpu - a.driverCpu)) / seconds,
    server_cpu_pct: (100 * (b.serverCpu - a.serverCpu)) / seconds,
    server_cpu_s: b.serverCpu - a.serverCpu,
    // other processes on the two pinned CPUs (tick-rounded, so a few % either way)
    others_cpu_pct: Math.max(0, (100 * (b.cpusBusy - a.cpusBusy - (b.serverCpu - a.serverCpu) -
      (b.driverCpu - a.driverCpu))) / seconds),
    steal_pct: (100 * (b.cpusSteal - a.cpusSteal)) / seconds,
    deliveries: b.deliveries - a.deliveries,
    acked: b.acked - a.acked,
  };
}

// -- statistics -------------------------------------------------------------------------------
function quantiles(values) {
  if (values.length === 0) return { count: 0, p50: null, p99: null, max: null };
  const sorted = Float64Array.from(values).sort();
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return { count: sorted.length, p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1] };
}

// -- HTTP -------------------------------------------------------------------------------------
function httpRequest(method, url, body, headers = {}, timeoutMs = 30000, agent = false) {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const started = now();
    const request = http.request(
      url,
      {
        method,
        agent,
        timeout: timeoutMs,
        headers: payload
          ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload), ...headers }
          : headers,
      },
      (response) => {
        const chunks = [];
        response.on('data', (chunk) => chunks.push(chunk));
        response.on('end', () =>
          resolve({
            status: response.statusCode,
            headers: response.headers,
            body: Buffer.concat(chunks),
            ms: now() - started,
          }),
        );
      },
    );
    request.on('timeout', () => request.destroy(new Error(`${method} ${url} timed out`)));
    request.on('error', reject);
    if (payload) request.write(payload);
    request.end();
  });
}

// -- a Socket.IO client connection --------------------------------------------------------------
const counters = { unexpected_closes: 0, stray_acks: 0, refused: 0, events: 0 };

// `42["message",{..."id":N,...,"text":"SEQ:...",...}]`: read id and sequence number straight
// from the frame's bytes (room and user names cannot hold quotes); anything else is parsed.
// Where the text usually starts: every server here ends a message with its text, then
// `","ts":"2026-11-24T07:15:28.123Z"}]` (35 bytes); elsewhere the key is searched for.
const MESSAGE_PREFIX = Buffer.from('42["message",{');
const ID_KEY = Buffer.from('"id":');
const TEXT_KEY = Buffer.from('"text":"');
const TEXT_FROM_END = 35 + TEXT_LENGTH + TEXT_KEY.length;

function startsAt(buffer, needle, at) {
  if (at < 0 || at + needle.length > buffer.length) return false;
  for (let i = 0; i < needle.length; i += 1) if (buffer[at + i] !== needle[i]) return false;
  return true;
}

function digitsAt(buffer, at) {
  let value = 0;
  let end = at;
  for (; end < buffer.length; end += 1) {
    const c = buffer[end];
    if (c < 48 || c > 57) break;
    value = value * 10 + (c - 48);
  }
  return end > at ? value : -1;
}

class Sio {
  constructor(url, cookie, onEvent, onMessage = null) {
    this.url = url;
    this.cookie = cookie;
    this.onEvent = onEvent; // (conn, name, data) for events
    this.onMessage = onMessage; // (conn, id, seq) for `message` events, when given
    this.acks = new Map();
    this.nextAck = 0;
    this.ws = null;
    this.closing = false;
    this.seen = null; // the receiving tracker's bitmap, one byte per sequence number
  }

  open(timeoutMs = 15000) {
    return new Promise((resolve, reject) => {
      const target = this.url.replace(/^http/, 'ws') + '/socket.io/?EIO=4&transport=websocket';
      const headers = this.cookie ? { Cookie: this.cookie } : {};
      let settled = false;
      const timer = setTimeout(() => fail(new Error('connect timed out')), timeoutMs);
      const fail = (error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.closing = true;
        ws.terminate();
        reject(error);
      };
      const handlers = {
        error: fail,
        close: () => {
          if (!settled) fail(new Error('closed before the namespace connected'));
          else if (!this.closing) counters.unexpected_closes += 1;
        },
        message: null,
      };
      const ws = new WebSocket(target, {
        headers,
        perMessageDeflate: false,
        skipUTF8Validation: true,
        handshakeTimeout: timeoutMs,
      });
      ws.on('message', (data) => handlers.message(data));
      ws.on('close', () => handlers.close());
      ws.on('error', (error) => handlers.error(error));
      this.ws = ws;
      handlers.message = (data) => {
        if (this.onMessage !== null && this.fastMessage(data)) return;
        const text = data.toString();
        const kind = text.charCodeAt(0);
        if (kind === 52) {
          // '4': a Socket.IO packet
          const packet = text.charCodeAt(1);
          if (packet === 50) this.event(text); // 42
          else if (packet === 51) this.ack(text); // 43
          else if (packet === 48) {
            // 40: the namespace is connected
            if (!settled) {
              settled = true;
              clearTimeout(timer);
              resolve(this);
            }
          } else if (packet === 52) {
            counters.refused += 1;
            fail(new Error(`connection refused: ${text.slice(2)}`));
          }
        } else if (kind === 50) ws.send('3'); // Engine.IO ping -> pong
        else if (kind === 48) ws.send('40'); // Engine.IO open -> connect the default namespace
      };
    });
  }

  fastMessage(data) {
    const n = MESSAGE_PREFIX.length;
    if (!startsAt(data, MESSAGE_PREFIX, 0)) return false;
    const idAt = startsAt(data, ID_KEY, n) ? n : data.indexOf(ID_KEY, n);
    let textAt = data.length - TEXT_FROM_END;
    if (textAt < n || !startsAt(data, TEXT_KEY, textAt)) textAt = data.indexOf(TEXT_KEY, n);
    if (idAt < 0 || textAt < 0) return false;
    const id = digitsAt(data, idAt + ID_KEY.length);
    const seq = digitsAt(data, textAt + TEXT_KEY.length);
    if (id < 0 || seq < 0) return false;
    counters.events += 1;
    this.onMessage(this, id, seq);
    return true;
  }

  event(text) {
    counters.events += 1;
    const packet = JSON.parse(text.slice(2));
    const [name, data] = packet;
    if (name === 'message' && this.onMessage !== null) {
      const seq = data && typeof data.text === 'string' ? parseInt(data.text, 10) : NaN;
      this.onMessage(this, data ? data.id : NaN, Number.isNaN(seq) ? -1 : seq);
    } else this.onEvent(this, name, data);
  }

  ack(text) {
    const bracket = text.indexOf('[');
    const id = Number(text.slice(2, bracket));
    const callback = this.acks.get(id);
    if (callback === undefined) {
      counters.stray_acks += 1;
      return;
    }
    this.acks.delete(id);
    callback(JSON.parse(text.slice(bracket))[0]);
  }

  emit(name, data, callback) {
    if (callback) {
      const id = this.nextAck++;
      this.acks.set(id, callback);
      this.ws.send(`42${id}${JSON.stringify([name, data])}`);
    } else {
      this.ws.send(`42${JSON.stringify([name, data])}`);
    }
  }

  call(name, data, timeoutMs = 30000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name}: no ack in ${timeoutMs} ms`)), timeoutMs);
      this.emit(name, data, (reply) => {
        clearTimeout(timer);
        resolve(reply);
      });
    });
  }

  close() {
    this.closing = true;
    if (this.ws) this.ws.terminate();
  }
}

// -- counting deliveries ------------------------------------------------------------------------
class Tracker {
  constructor(maxMessages, options = {}) {
    this.max = maxMessages;
    this.sent = 0;
    this.acked = 0;
    this.ackErrors = 0;
    this.firstError = null;
    this.outstanding = 0;
    this.deliveries = 0;
    this.duplicates = 0;
    this.unexpected = 0;
    this.idMismatch = 0;
    this.sendTime = new Float64Array(maxMessages);
    this.ackId = new Float64Array(maxMessages); // 0 = no ack yet (server ids start at 1)
    this.idBySeq = new Float64Array(maxMessages); // 0 = not delivered yet
    this.latency = options.latency ? { seq: [], ms: [] } : null;
    this.arrivals = null; // arrival times at one watched connection (for stalls)
    this.watched = null;
  }

  receiver(conn) {
    conn.seen = new Uint8Array(this.max);
    return conn;
  }

  deliver(conn, id, seq) {
    const arrived = now();
    if (!(seq >= 0 && seq < this.sent) || conn.seen === null) {
      this.unexpected += 1;
      return;
    }
    if (conn.seen[seq] === 1) {
      this.duplicates += 1;
      return;
    }
    conn.seen[seq] = 1;
    this.deliveries += 1;
    const known = this.idBySeq[seq];
    if (known === 0) this.idBySeq[seq] = id;
    else if (known !== id) this.idMismatch += 1;
    if (this.latency !== null) {
      this.latency.seq.push(seq);
      this.latency.ms.push(arrived - this.sendTime[seq]);
    }
    if (conn === this.watched) this.arrivals.push(arrived);
  }

  send(conn, room, onAcked) {
    if (this.sent >= this.max) return false;
    const seq = this.sent++;
    this.outstanding += 1;
    this.sendTime[seq] = now();
    conn.emit('message', { room, text: textOf(seq) }, (reply) => {
      this.outstanding -= 1;
      if (reply && reply.ok === true) {
        this.acked += 1;
        this.ackId[seq] = reply.id;
      } else {
        this.ackErrors += 1;
        if (this.firstError === null) this.firstError = reply;
      }
      if (onAcked) onAcked();
    });
    return true;
  }

  latencies(fromMs, toMs) {
    const picked = [];
    if (this.latency === null) return picked;
    const { seq, ms } = this.latency;
    for (let i = 0; i < seq.length; i += 1) {
      const sentAt = this.sendTime[seq[i]];
      if (sentAt >= fromMs && sentAt < toMs) picked.push(ms[i]);
    }
    return picked;
  }

  // Until every ack is in and every accepted message reached every member (or timeout); a
  // message the server refused is not delivered. True when everything arrived in time.
  async drain(members, timeoutMs) {
    const deadline = now() + timeoutMs;
    while (now() < deadline) {
      if (this.outstanding === 0 && this.deliveries >= this.acked * members) return true;
      await sleep(20);
    }
    return false;
  }

  verdict(members) {
    let ackIdMismatch = 0;
    const ids = [];
    for (let seq = 0; seq < this.sent; seq += 1) {
      const acked = this.ackId[seq];
      if (acked === 0) continue;
      ids.push(acked);
      if (this.idBySeq[seq] !== 0 && this.idBySeq[seq] !== acked) ackIdMismatch += 1;
    }
    ids.sort((a, b) => a - b);
    let ackIdDuplicates = 0;
    for (let i = 1; i < ids.length; i += 1) if (ids[i] === ids[i - 1]) ackIdDuplicates += 1;
    const expected = this.sent * members;
    return {
      sent: this.sent,
      acked: this.acked,
      ack_errors: this.ackErrors,
      first_error: this.firstError,
      members,
      expected_deliveries: expected,
      deliveries: this.deliveries,
      missing: expected - this.deliveries,
      missing_of_accepted: this.acked * members - this.deliveries,
      duplicates: this.duplicates,
      unexpected: this.unexpected,
      delivery_id_mismatch: this.idMismatch + ackIdMismatch,
      ack_id_duplicates: ackIdDuplicates,
      exact: expected === this.deliveries && this.duplicates === 0 && this.unexpected === 0 &&
        this.idMismatch + ackIdMismatch === 0 && ackIdDuplicates === 0 && this.ackErrors === 0,
    };
  }
}

// -- setting up rooms -------------------------------------------------------------------------
const urls = cfg.urls || [cfg.url];
const cookies = cfg.cookies && cfg.cookies.length ? cfg.cookies : [null];
const opened = [];

async function pool(count, limit, work) {
  let next = 0;
  const workers = [];
  for (let w = 0; w < Math.min(limit, count); w += 1) {
    workers.push(
      (async () => {
        while (next < count) {
          const index = next++;
          await work(index);
        }
      })(),
    );
  }
  await Promise.all(workers);
}

// Connection i of n goes to urls[i % urls.length] (members split over the processes) and
// carries cookie block floor(i * cookies / n), so one user's connections share few rooms.
function cookieFor(index, count) {
  return cookies[Math.min(cookies.length - 1, Math.floor((index * cookies.length) / count))];
}

async function openAndJoin(count, roomOf, onMessage, concurrency = 20) {
  const conns = new Array(count);
  const failures = [];
  await pool(count, concurrency, async (i) => {
    const conn = new Sio(urls[i % urls.length], cookieFor(i, count), () => {}, onMessage);
    try {
      await conn.open();
      opened.push(conn);
      const reply = await conn.call('join', { room: roomOf(i) });
      if (!reply || reply.ok !== true) throw new Error(`join refused: ${JSON.stringify(reply)}`);
      conns[i] = conn;
    } catch (error) {
      conn.close();
      failures.push(String(error.message || error));
    }
  });
  if (failures.length && !cfg.tolerate_failures) {
    throw new Error(`${failures.length} of ${count} connections failed: ${failures[0]}`);
  }
  return { conns: conns.filter(Boolean), failures };
}

function uniqueRoom(prefix) {
  return `${prefix}-${process.pid}-${Math.floor(Math.random() * 1e6)}`;
}

async function roomWithTracker(members, tracker, prefix) {
  const room = uniqueRoom(prefix);
  const onMessage = (conn, id, seq) => tracker.deliver(conn, id, seq);
  const { conns } = await openAndJoin(members, () => room, onMessage);
  for (const conn of conns) tracker.receiver(conn);
  await sleep(300); // let the `joined` broadcasts settle
  return { room, conns };
}

function paceSender(tracker, conn, room, rate, maxOutstanding) {
  const state = { stopped: false, behind: 0 };
  const started = now();
  const timer = setInterval(() => {
    if (state.stopped) return;
    const due = Math.floor(((now() - started) * rate) / 1000);
    while (tracker.sent < due && tracker.outstanding < maxOutstanding) {
      if (!tracker.send(conn, room)) break;
    }
    if (tracker.sent < due) state.behind = Math.max(state.behind, due - tracker.sent);
  }, 1);
  state.stop = () => {
    state.stopped = true;
    clearInterval(timer);
  };
  return state;
}

// -- workloads --------------------------------------------------------------------------------
// B1 (and B6): one sender keeps `window` messages awaiting their acks; every member receives.
async function fanout() {
  const members = cfg.members;
  const tracker = new Tracker(cfg.max_messages);
  const { room, conns } = await roomWithTracker(members, tracker, cfg.room_prefix || 'fanout');
  const sender = conns[0];
  let sending = true;
  const next = () => {
    if (sending) tracker.send(sender, room, next);
  };
  const first = snapshot(tracker);
  for (let k = 0; k < cfg.window; k += 1) next();
  await sleep(cfg.warmup_s * 1000);
  const a = snapshot(tracker);
  await sleep(cfg.duration_s * 1000);
  const b = snapshot(tracker);
  sending = false;
  await tracker.drain(members, cfg.drain_s * 1000);
  const window = windowOf(a, b);
  const whole = windowOf(first, snapshot(tracker));
  return {
    ...tracker.verdict(members),
    capped: tracker.sent >= tracker.max,
    window,
    deliveries_per_s: window.deliveries / window.seconds,
    messages_per_s: window.acked / window.seconds,
    server_cpu_us_per_message: window.acked ? (1e6 * window.server_cpu_s) / window.acked : null,
    driver_cpu_pct: Math.max(window.driver_cpu_pct, whole.driver_cpu_pct),
    connections: conns.length,
  };
}

// B2: messages paced at `rate` per second into a room of `members`; latency send -> receive.
async function paced() {
  const members = cfg.members;
  const tracker = new Tracker(cfg.max_messages, { latency: true });
  const { room, conns } = await roomWithTracker(members, tracker, 'paced');
  const pacer = paceSender(tracker, conns[0], room, cfg.rate, cfg.max_outstanding || 2000);
  await sleep(cfg.warmup_s * 1000);
  const a = snapshot(tracker);
  await sleep(cfg.duration_s * 1000);
  const b = snapshot(tracker);
  pacer.stop();
  await tracker.drain(members, cfg.drain_s * 1000);
  const window = windowOf(a, b);
  const latency = quantiles(tracker.latencies(a.t, b.t));
  return {
    ...tracker.verdict(members),
    window,
    rate: cfg.rate,
    achieved_rate: window.acked / window.seconds,
    fell_behind_by: pacer.behind,
    latency_ms: latency,
    driver_cpu_pct: window.driver_cpu_pct,
  };
}

// B4: the paced traffic, then `logins.length` logins at once; latency without and during.
async function loginsDuringTraffic() {
  const members = cfg.members;
  const tracker = new Tracker(cfg.max_messages, { latency: true });
  const { room, conns } = await roomWithTracker(members, tracker, 'logins');
  const pacer = paceSender(tracker, conns[0], room, cfg.rate, cfg.max_outstanding || 2000);
  await sleep(cfg.warmup_s * 1000);
  const a = snapshot(tracker);
  await sleep(cfg.duration_s * 1000);
  const b = snapshot(tracker);
  const results = await Promise.all(
    cfg.logins.map((user) =>
      httpRequest('POST', `${urls[0]}/login`, { username: user.username, password: user.password }).then(
        (reply) => ({ status: reply.status, ms: reply.ms }),
        (error) => ({ status: 0, ms: now() - b.t, error: String(error.message) }),
      ),
    ),
  );
  const c = snapshot(tracker);
  await sleep(500);
  pacer.stop();
  await tracker.drain(members, cfg.drain_s * 1000);
  const without = quantiles(tracker.latencies(a.t, b.t));
  const during = quantiles(tracker.latencies(b.t, c.t));
  const burst = windowOf(b, c);
  return {
    ...tracker.verdict(members),
    rate: cfg.rate,
    fell_behind_by: pacer.behind,
    latency_without_ms: without,
    latency_during_ms: during,
    logins: results.length,
    logins_ok: results.filter((r) => r.status === 200).length,
    login_statuses: [...new Set(results.map((r) => r.status))],
    login_ms: quantiles(results.map((r) => r.ms)),
    burst_s: burst.seconds,
    window: windowOf(a, b),
    burst_window: burst,
    driver_cpu_pct: Math.max(windowOf(a, b).driver_cpu_pct, burst.driver_cpu_pct),
  };
}

// B5: `connections` idle connections, each joined to a room of `room_size`.
async function idle() {
  const count = cfg.connections;
  const roomSize = cfg.room_size;
  const prefix = uniqueRoom('idle');
  await sleep(500);
  const rssBefore = serverPids.reduce((sum, pid) => sum + procRssKb(pid), 0);
  const a = snapshot(null);
  const { conns, failures } = await openAndJoin(
    count,
    (i) => `${prefix}-${Math.floor(i / roomSize)}`,
    null,
    cfg.concurrency,
  );
  const b = snapshot(null);
  await sleep(cfg.settle_s * 1000);
  const rssAfter = serverPids.reduce((sum, pid) => sum + procRssKb(pid), 0);
  const window = windowOf(a, b);
  return {
    connections: conns.length,
    requested: count,
    failures: failures.length,
    first_failure: failures[0] || null,
    room_size: roomSize,
    rss_before_kb: rssBefore,
    rss_after_kb: rssAfter,
    rss_per_connection_kb: conns.length ? (rssAfter - rssBefore) / conns.length : null,
    open_join_s: window.seconds,
    connections_per_s: conns.length / window.seconds,
    window,
    driver_cpu_pct: window.driver_cpu_pct,
    exact: failures.length === 0,
  };
}

// B6: every member emits `per_sender` messages at once (members * per_sender concurrent emits).
async function burst() {
  const members = cfg.members;
  const total = members * cfg.per_sender;
  const tracker = new Tracker(total);
  const { room, conns } = await roomWithTracker(members, tracker, 'burst');
  const a = snapshot(tracker);
  for (let k = 0; k < cfg.per_sender; k += 1) for (const conn of conns) tracker.send(conn, room);
  const drained = await tracker.drain(members, cfg.drain_s * 1000);
  const b = snapshot(tracker);
  const window = windowOf(a, b);
  return {
    ...tracker.verdict(members),
    drained,
    concurrent_emits: total,
    all_done_ms: window.seconds * 1000,
    window,
    driver_cpu_pct: window.driver_cpu_pct,
  };
}

// B7: `rooms` active rooms with traffic in a probe room; GET /metrics now and then, on one
// kept-alive connection as Prometheus scrapes (`scrape_keepalive` false: a new one each time).
async function scrape() {
  const tracker = new Tracker(cfg.max_messages, { latency: true });
  const perRoom = cfg.members_per_room;
  const prefix = uniqueRoom('active');
  const roomOf = (i) => `${prefix}-${Math.floor(i / perRoom)}`;
  const { conns } = await openAndJoin(cfg.rooms * perRoom, roomOf, null);
  for (let r = 0; r < cfg.rooms; r += 1) {
    // one message in each room, so its message series exist too
    await conns[r * perRoom].call('message', { room: `${prefix}-${r}`, text: 'hello' });
  }
  const probe = await roomWithTracker(2, tracker, 'probe');
  tracker.arrivals = [];
  tracker.watched = probe.conns[1];
  const pacer = paceSender(tracker, probe.conns[0], probe.room, cfg.rate, cfg.max_outstanding || 2000);
  await sleep(cfg.warmup_s * 1000);
  const a = snapshot(tracker);
  await sleep(cfg.duration_s * 1000);
  const b = snapshot(tracker);
  const scrapes = [];
  const headers = cfg.metrics_token ? { Authorization: `Bearer ${cfg.metrics_token}` } : {};
  const keepalive = cfg.scrape_keepalive !== false;
  const agent = keepalive ? new http.Agent({ keepAlive: true, maxSockets: 1 }) : false;
  while (now() - b.t < cfg.duration_s * 1000 && scrapes.length < cfg.max_scrapes) {
    const started = now();
    const reply = await httpRequest('GET', `${urls[0]}/metrics`, undefined, headers, 30000, agent);
    scrapes.push({ started, ms: reply.ms, bytes: reply.body.length, status: reply.status });
    const wait = cfg.scrape_interval_ms - (now() - started);
    if (wait > 0) await sleep(wait);
  }
  const c = snapshot(tracker);
  pacer.stop();
  if (agent) agent.destroy();
  await tracker.drain(2, cfg.drain_s * 1000);
  const gaps = (from, to) => {
    let worst = 0;
    const times = tracker.arrivals.filter((t) => t >= from && t < to);
    for (let i = 1; i < times.length; i += 1) worst = Math.max(worst, times[i] - times[i - 1]);
    return { worst_ms: worst, deliveries: times.length };
  };
  const last = scrapes.length ? scrapes[scrapes.length - 1] : null;
  return {
    ...tracker.verdict(2),
    active_rooms: cfg.rooms + 1,
    rate: cfg.rate,
    fell_behind_by: pacer.behind,
    scrapes: scrapes.length,
    scrape_statuses: [...new Set(scrapes.map((s) => s.status))],
    scrape_ms: quantiles(scrapes.map((s) => s.ms)),
    body_bytes: last ? last.bytes : null,
    scrape_keepalive: keepalive,
    stall_without_ms: gaps(a.t, b.t),
    stall_during_ms: gaps(b.t, c.t),
    // send to delivery, for messages sent before / while scraping (both members)
    latency_without_ms: quantiles(tracker.latencies(a.t, b.t)),
    latency_during_ms: quantiles(tracker.latencies(b.t, c.t)),
    window: windowOf(b, c),
    driver_cpu_pct: Math.max(windowOf(a, b).driver_cpu_pct, windowOf(b, c).driver_cpu_pct),
  };
}

const WORKLOADS = { fanout, paced, logins: loginsDuringTraffic, idle, burst, scrape };

async function main() {
  const workload = WORKLOADS[cfg.workload];
  if (!workload) throw new Error(`unknown workload ${cfg.workload}`);
  const deadline = setTimeout(() => {
    process.stdout.write(JSON.stringify({ error: `driver deadline of ${cfg.deadline_s} s passed` }) + '\n');
    process.exit(3);
  }, (cfg.deadline_s || 300) * 1000);
  const result = await workload();
  clearTimeout(deadline);
  for (const conn of opened) conn.close();
  const cpu = process.cpuUsage();
  result.workload = cfg.workload;
  result.counters = counters;
  result.driver_cpu_total_s = (cpu.user + cpu.system) / 1e6;
  result.driver_cpu_user_s = cpu.user / 1e6;
  result.driver_cpu_system_s = cpu.system / 1e6;
  result.driver_max_rss_kb = process.resourceUsage().maxRSS;
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stdout.write(JSON.stringify({ error: String((error && error.stack) || error) }) + '\n');
    process.exit(2);
  },
);
