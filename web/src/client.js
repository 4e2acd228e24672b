// The IM state of one browser tab (one device): a plain MQTT 3.1.1 client of mqim's v1 wire
// contract over WebSocket. Nothing here relies on the server beyond what any MQTT client sees.
import mqtt from 'mqtt';

const V = 1;
const HISTORY_PAGE = 30;
const TYPING_SEND_MS = 2500; // send at most one typing notice per conversation this often
const TYPING_SHOW_MS = 5000; // a typing notice is shown this long unless renewed
const MAX_SYNC_PAGES = 200; // bound on the pages one sync may take

export function directConv(a, b) {
  return a < b ? `d:${a}:${b}` : `d:${b}:${a}`;
}

function randomId(prefix) {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

// A distinct client id per tab (sessionStorage is per tab), kept across reloads so the tab
// resumes its persistent session: two tabs of one user are two devices.
export function tabClientId(user) {
  const key = `mqim.cid.${user}`;
  let cid = sessionStorage.getItem(key);
  if (!cid) {
    cid = randomId(`web-${user.slice(0, 40)}-`);
    sessionStorage.setItem(key, cid);
  }
  return cid;
}

export class ImClient extends EventTarget {
  constructor({ wsUrl, user, secret, clientId }) {
    super();
    this.wsUrl = wsUrl;
    this.me = user;
    this.secret = secret;
    this.clientId = clientId;
    this.selfConv = directConv(user, user);
    this.selfSeq = 0; // delete-for-me events live in my own conversation, never listed
    this.convs = new Map();
    this.presence = new Map(); // user -> {state, epoch}
    this.presenceWanted = new Set();
    this.presenceGranted = new Set();
    this.groupNames = new Map();
    this.pendingCmds = new Map(); // ref -> {resolve, reject}
    this.outboxKey = `mqim.outbox.${user}.${clientId}`;
    this.outbox = new Map(JSON.parse(localStorage.getItem(this.outboxKey) || '[]'));
    this.connected = false;
    this.everConnected = false;
    this.authFailed = false;
    this.syncing = false;
    this.syncAgain = false;
    this.typingSent = new Map();
    this.mqtt = null;
  }

  // -- connection -------------------------------------------------------------------------------

  start() {
    const client = mqtt.connect(this.wsUrl, {
      protocolVersion: 4,
      protocolId: 'MQTT',
      clientId: this.clientId,
      username: this.me,
      password: this.secret,
      clean: false,
      keepalive: 30,
      reconnectPeriod: 1000,
      connectTimeout: 10000,
      resubscribe: true,
      // Publishes are never queued by mqtt.js while offline: the outbox resends them by id.
      queueQoSZero: false,
    });
    this.mqtt = client;
    client.on('connect', () => this._onConnect());
    client.on('close', () => this._onDown());
    client.on('offline', () => this._onDown());
    client.on('error', (err) => this._onError(err));
    client.on('message', (topic, payload) => this._onMessage(topic, payload));
  }

  stop() {
    if (this.mqtt) this.mqtt.end(true);
    this.mqtt = null;
    this.connected = false;
  }

  _emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _onConnect() {
    this.connected = true;
    this.everConnected = true;
    this._emit('connection', { connected: true });
    // Presence subscriptions: the persistent session keeps granted ones; refused ones are retried.
    for (const user of this.presenceWanted) this._subscribePresence(user, true);
    this.sync();
    this.command({ op: 'group.list' })
      .then((result) => {
        for (const g of result.groups || []) this.groupNames.set(g.group, g.name || g.group);
        this._emit('change');
      })
      .catch(() => {});
    this._resendOutbox();
  }

  _onDown() {
    if (!this.connected && this.everConnected) return;
    this.connected = false;
    this._emit('connection', { connected: false });
  }

  _onError(err) {
    // CONNACK 4 (bad user name or password) and 5 (not authorized): do not retry.
    if (err && (err.code === 4 || err.code === 5 || err.code === 134 || err.code === 135)) {
      this.authFailed = true;
      this._emit('auth-failed', { message: 'Wrong user or password/token' });
      this.stop();
    }
  }

  _publish(kind, body, qos = 1) {
    if (!this.mqtt || !this.connected) return false;
    this.mqtt.publish(`im/v1/up/${this.me}/${kind}`, JSON.stringify({ v: V, ...body }), { qos });
    return true;
  }

  // -- conversations ----------------------------------------------------------------------------

  conv(id) {
    let c = this.convs.get(id);
    if (!c) {
      const isGroup = id.startsWith('g:');
      const parts = id.split(':');
      c = {
        id,
        isGroup,
        group: isGroup ? id.slice(2) : null,
        peer: isGroup ? null : parts[1] === this.me ? parts[2] : parts[1],
        lastSeq: 0,
        readSeq: 0,
        messages: new Map(), // seq -> message (events with op are applied, not shown)
        oldestSeq: null,
        historyDone: false,
        historyLoading: false,
        typing: new Map(), // user -> until (ms)
        peerRead: new Map(), // user -> read seq
        notices: [],
        removed: false,
        lastTs: 0,
        pendingOps: new Map(), // ref_seq -> ops not yet applied (their target is not loaded)
      };
      this.convs.set(id, c);
      if (!isGroup) this._subscribePresence(c.peer);
    }
    return c;
  }

  title(c) {
    return c.isGroup ? this.groupNames.get(c.group) || c.group : c.peer;
  }

  unread(c) {
    return Math.max(0, c.lastSeq - c.readSeq);
  }

  listed() {
    return [...this.convs.values()]
      .filter((c) => c.id !== this.selfConv)
      .sort((a, b) => b.lastTs - a.lastTs || a.id.localeCompare(b.id));
  }

  // Messages to show, in seq order, then what is still in the outbox for this conversation.
  visible(c) {
    const shown = [...c.messages.values()].filter((m) => !m.op && !m.deleted).sort((a, b) => a.seq - b.seq);
    const pending = [...this.outbox.values()]
      .filter((o) => o.conv === c.id && !o.body.op)
      .map((o) => ({ id: o.body.id, from: this.me, text: o.body.text, ts: o.ts, local: o.state }));
    return [...shown, ...pending];
  }

  lastMessage(c) {
    const shown = this.visible(c);
    return shown.length ? shown[shown.length - 1] : null;
  }

  // Send state of one of my messages: sending, sent, delivered, read.
  stateOf(c, m) {
    if (m.local) return m.local;
    if (m.from !== this.me) return null;
    for (const seq of c.peerRead.values()) if (seq >= m.seq) return 'read';
    return m.delivered ? 'delivered' : 'sent';
  }

  // How many others have read up to my message `m` (read receipts move a cursor forward).
  readers(c, m) {
    let n = 0;
    for (const seq of c.peerRead.values()) if (seq >= m.seq) n += 1;
    return n;
  }

  _addMessage(m) {
    if (typeof m.seq !== 'number' || typeof m.conv !== 'string') return;
    if (m.conv === this.selfConv) {
      this.selfSeq = Math.max(this.selfSeq, m.seq);
      if (m.op === 'delete') this._applyDelete(m.ref_conv, m.ref_seq);
      return;
    }
    const c = this.conv(m.conv);
    const known = c.messages.get(m.seq);
    if (known && !m.deleted) {
      return; // the same seq from sync, the live topic and our own echo: once
    }
    c.messages.set(m.seq, { ...known, ...m });
    c.lastSeq = Math.max(c.lastSeq, m.seq);
    c.lastTs = Math.max(c.lastTs, m.ts || 0);
    if (c.oldestSeq === null || m.seq < c.oldestSeq) c.oldestSeq = m.seq;
    if (m.from === this.me) c.readSeq = Math.max(c.readSeq, m.seq);
    if (m.from && m.from !== this.me) c.typing.delete(m.from);
    if (m.op === 'edit' || m.op === 'recall') this._applyOp(c, m);
    const waiting = c.pendingOps.get(m.seq);
    if (waiting) {
      c.pendingOps.delete(m.seq);
      for (const op of waiting) this._applyOp(c, op);
    }
  }

  _applyOp(c, op) {
    const target = c.messages.get(op.ref_seq);
    if (!target) {
      const list = c.pendingOps.get(op.ref_seq) || [];
      list.push(op);
      c.pendingOps.set(op.ref_seq, list);
      return;
    }
    if (op.op === 'edit' && !target.recalled) {
      target.text = op.text;
      target.edited = true;
    } else if (op.op === 'recall') {
      target.recalled = true;
      target.text = null;
    }
  }

  _applyDelete(conv, seq) {
    if (typeof conv !== 'string' || typeof seq !== 'number') return;
    const c = this.convs.get(conv);
    if (!c) return;
    const target = c.messages.get(seq);
    if (target) {
      target.deleted = true;
      target.text = null;
    }
  }

  // -- requests ---------------------------------------------------------------------------------

  // Sends a message (or an edit/recall/delete op) through the outbox: it stays there, and is
  // sent again with the same idempotency id after a reconnect, until its ack arrives.
  send(convId, fields) {
    const c = this.conv(convId);
    const body = { id: randomId('w-'), ...fields };
    if (c.isGroup) body.group = c.group;
    else body.to = c.peer;
    const entry = { conv: convId, body, state: 'sending', ts: Date.now() };
    this.outbox.set(body.id, entry);
    this._saveOutbox();
    c.lastTs = Math.max(c.lastTs, entry.ts);
    this._publish('msg', body);
    this._emit('change');
    return body.id;
  }

  edit(convId, seq, text) {
    return this.send(convId, { op: 'edit', ref_seq: seq, text });
  }

  recall(convId, seq) {
    return this.send(convId, { op: 'recall', ref_seq: seq });
  }

  deleteForMe(convId, seq) {
    this._applyDelete(convId, seq); // private to me: hide it now, the server confirms
    return this.send(convId, { op: 'delete', ref_seq: seq });
  }

  _resendOutbox() {
    for (const entry of this.outbox.values()) {
      if (entry.state === 'sending') this._publish('msg', entry.body);
    }
  }

  _saveOutbox() {
    localStorage.setItem(this.outboxKey, JSON.stringify([...this.outbox.entries()]));
  }

  markRead(convId) {
    const c = this.convs.get(convId);
    if (!c || c.lastSeq <= c.readSeq) return;
    c.readSeq = c.lastSeq;
    this._publish('read', { conv: convId, seq: c.lastSeq });
    this._emit('change');
  }

  typing(convId) {
    const now = Date.now();
    if (now - (this.typingSent.get(convId) || 0) < TYPING_SEND_MS) return;
    if (this._publish('typing', { conv: convId }, 0)) this.typingSent.set(convId, now);
  }

  command(fields) {
    const id = randomId('cmd-');
    return new Promise((resolve, reject) => {
      if (!this._publish('cmd', { id, ...fields })) {
        reject(new Error('offline'));
        return;
      }
      this.pendingCmds.set(id, { resolve, reject });
    });
  }

  async createGroup(group, name, members) {
    const result = await this.command({ op: 'group.create', group, name: name || undefined, members });
    this.groupNames.set(group, result.name || group);
    this.conv(`g:${group}`).lastTs = Date.now();
    this._emit('change');
    return result;
  }

  addMembers(group, members) {
    return this.command({ op: 'group.add', group, members });
  }

  // Sync: everything after what this tab has, in pages; repeated once more if asked meanwhile.
  sync() {
    if (this.syncing) {
      this.syncAgain = true;
      return;
    }
    this.syncing = true;
    this.syncPages = 0;
    this._syncPage(null);
  }

  _syncPage(fromConv) {
    const since = {};
    for (const c of this.convs.values()) if (c.lastSeq > 0) since[c.id] = c.lastSeq;
    if (this.selfSeq > 0) since[this.selfConv] = this.selfSeq;
    this.syncRef = randomId('sync-');
    const body = { id: this.syncRef, since };
    if (fromConv) body.from_conv = fromConv;
    if (!this._publish('sync', body)) this.syncing = false;
  }

  _onSync(page) {
    if (page.ref !== this.syncRef) return;
    for (const entry of page.convs || []) {
      for (const m of entry.messages || []) this._addMessage(m);
      if (entry.conv === this.selfConv) continue;
      const c = this.conv(entry.conv);
      c.lastSeq = Math.max(c.lastSeq, entry.last_seq);
      c.readSeq = Math.max(c.readSeq, entry.read_seq);
    }
    this.syncPages += 1;
    if (page.more && page.next_conv && this.syncPages < MAX_SYNC_PAGES) {
      this._syncPage(page.next_conv);
    } else {
      this.syncing = false;
      if (this.syncAgain) {
        this.syncAgain = false;
        this.sync();
      }
      this._emit('synced');
    }
    this._emit('change');
  }

  // Asks for the page of history before the oldest message loaded (the newest page when none is).
  loadHistory(convId) {
    const c = this.convs.get(convId);
    if (!c || c.historyDone || c.historyLoading) return false;
    if ((c.oldestSeq !== null && c.oldestSeq <= 1) || (c.oldestSeq === null && c.lastSeq === 0)) {
      c.historyDone = true;
      return false;
    }
    const id = randomId('hist-');
    const body = { id, conv: convId, limit: HISTORY_PAGE };
    if (c.oldestSeq !== null) body.before = c.oldestSeq;
    if (!this._publish('history', body)) return false;
    c.historyLoading = id;
    return true;
  }

  _onHistory(page) {
    const c = this.convs.get(page.conv);
    if (!c || c.historyLoading !== page.ref) return;
    c.historyLoading = false;
    for (const m of page.messages || []) this._addMessage(m);
    if (!page.more || !page.messages || page.messages.length === 0) c.historyDone = true;
    this._emit('history', { conv: c.id });
    this._emit('change');
  }

  // -- presence ---------------------------------------------------------------------------------

  _subscribePresence(user, retry = false) {
    if (!user || user === this.me) return;
    if (!retry && this.presenceWanted.has(user) && this.presenceGranted.has(user)) return;
    this.presenceWanted.add(user);
    if (!this.mqtt || !this.connected) return;
    this.mqtt.subscribe(`im/v1/presence/${user}`, { qos: 1 }, (err, granted) => {
      // 0x80: no shared conversation yet; retried after the first message (see _onAck).
      if (!err && granted && granted[0] && granted[0].qos !== 128) this.presenceGranted.add(user);
    });
  }

  // -- inbound ----------------------------------------------------------------------------------

  _onMessage(topic, payload) {
    let data;
    try {
      data = JSON.parse(new TextDecoder().decode(payload));
    } catch {
      return; // not ours to understand
    }
    if (!data || typeof data !== 'object') return;
    const parts = topic.split('/');
    if (parts[0] !== 'im' || parts[1] !== 'v1') return;
    if (parts[2] === 'presence') {
      this._onPresence(data);
      return;
    }
    const kind = parts[4];
    const inGroup = parts[2] === 'g';
    switch (kind) {
      case 'msg':
        this._addMessage(data);
        break;
      case 'ack':
        this._onAck(data);
        break;
      case 'receipt':
        this._onReceipt(data);
        break;
      case 'typing':
        this._onTyping(data);
        break;
      case 'sync':
        this._onSync(data);
        return;
      case 'history':
        this._onHistory(data);
        return;
      case 'cmd':
        this._onCmd(data);
        break;
      case 'error':
        this._onErrorReply(data);
        break;
      case 'event':
        if (inGroup) this._onGroupEvent(parts[3], data);
        else this._onEvent(data);
        break;
      default:
        return;
    }
    this._emit('change');
  }

  _onAck(ack) {
    const entry = this.outbox.get(ack.id);
    if (!entry) return; // a second ack for a resent id: already handled
    this.outbox.delete(ack.id);
    this._saveOutbox();
    if (entry.conv === this.selfConv || entry.body.op === 'delete') return;
    this._addMessage({ ...entry.body, conv: ack.conv, seq: ack.seq, server_id: ack.server_id, ts: ack.ts, from: this.me });
    const c = this.conv(ack.conv);
    if (!c.isGroup && !this.presenceGranted.has(c.peer)) this._subscribePresence(c.peer, true);
  }

  _onReceipt(r) {
    const c = this.convs.get(r.conv);
    if (!c) return;
    if (r.kind === 'delivered') {
      const m = c.messages.get(r.seq);
      if (m) {
        m.delivered = true;
        if (typeof r.count === 'number') m.deliveredCount = Math.max(m.deliveredCount || 0, r.count);
      }
    } else if (r.kind === 'read' && r.user !== this.me) {
      c.peerRead.set(r.user, Math.max(c.peerRead.get(r.user) || 0, r.seq));
    }
  }

  _onTyping(t) {
    if (!t.conv || !t.user || t.user === this.me) return;
    const c = this.conv(t.conv);
    c.typing.set(t.user, Date.now() + TYPING_SHOW_MS);
    setTimeout(() => this._emit('change'), TYPING_SHOW_MS + 50);
  }

  typists(c) {
    const now = Date.now();
    return [...c.typing.entries()].filter(([, until]) => until > now).map(([user]) => user);
  }

  _onCmd(reply) {
    const waiting = this.pendingCmds.get(reply.ref);
    if (!waiting) return;
    this.pendingCmds.delete(reply.ref);
    if (reply.ok) waiting.resolve(reply.result || {});
    else waiting.reject(new Error(reply.error ? `${reply.error.code}: ${reply.error.message}` : 'refused'));
  }

  _onErrorReply(err) {
    const entry = err.ref ? this.outbox.get(err.ref) : null;
    if (entry && err.code !== 'unavailable') {
      // Refused for good (forbidden, bad_request, too_large, rate_limited): never resent.
      entry.state = 'failed';
      entry.error = err.code;
      this._saveOutbox();
    }
    const cmd = err.ref ? this.pendingCmds.get(err.ref) : null;
    if (cmd) {
      this.pendingCmds.delete(err.ref);
      cmd.reject(new Error(`${err.code}: ${err.message}`));
    }
    this._emit('notice', { text: `${err.code}: ${err.message}` });
  }

  discard(id) {
    this.outbox.delete(id);
    this._saveOutbox();
    this._emit('change');
  }

  _onEvent(e) {
    switch (e.type) {
      case 'read': {
        const c = this.conv(e.conv);
        c.readSeq = Math.max(c.readSeq, e.seq);
        break;
      }
      case 'group.added': {
        const c = this.conv(`g:${e.group}`);
        c.removed = false;
        c.lastTs = Math.max(c.lastTs, Date.now());
        c.notices.push(`${e.by || 'Someone'} added you`);
        this.command({ op: 'group.list' })
          .then((result) => {
            for (const g of result.groups || []) this.groupNames.set(g.group, g.name || g.group);
            this._emit('change');
          })
          .catch(() => {});
        this.sync();
        break;
      }
      case 'group.removed':
      case 'group.left': {
        const c = this.conv(`g:${e.group}`);
        c.removed = true;
        c.notices.push(e.type === 'group.left' ? 'You left this group' : `${e.by || 'An admin'} removed you`);
        break;
      }
      case 'queue_overflow':
        this._emit('notice', { text: 'Missed messages while away: syncing' });
        this.sync();
        break;
      default:
        break;
    }
  }

  _onGroupEvent(group, e) {
    const c = this.conv(`g:${group}`);
    const who = e.by || 'someone';
    const members = (e.members || []).join(', ');
    if (e.type === 'group.add') c.notices.push(`${who} added ${members || `${e.count} members`}`);
    else if (e.type === 'group.remove') c.notices.push(`${who} removed ${members || `${e.count} members`}`);
    else if (e.type === 'group.leave') c.notices.push(`${members || who} left`);
    else if (e.type === 'group.rename') {
      if (e.name) this.groupNames.set(group, e.name);
      c.notices.push(`${who} renamed the group`);
    }
  }

  _onPresence(p) {
    if (!p.user) return;
    const known = this.presence.get(p.user);
    if (known && typeof p.epoch === 'number' && p.epoch < known.epoch) return;
    this.presence.set(p.user, { state: p.state, epoch: p.epoch || 0 });
  }
}
