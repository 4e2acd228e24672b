// The page: login, conversation list, one open conversation. All rendering uses textContent
// (never innerHTML with data), so message text cannot inject markup.
import { ImClient, directConv, tabClientId } from './client.js';

const $ = (id) => document.getElementById(id);
const LOGIN_KEY = 'mqim.login';

let im = null;
let openConv = null;
let editing = null; // {conv, seq} while the composer edits a message
let wsUrl = null;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function time(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function banner(text, kind = 'info') {
  const b = $('banner');
  b.textContent = text || '';
  b.dataset.kind = kind;
  b.hidden = !text;
}

async function loadConfig() {
  const response = await fetch('config.json', { cache: 'no-store' });
  if (!response.ok) throw new Error(`config.json: HTTP ${response.status}`);
  const config = await response.json();
  return config.ws_url;
}

// -- login ----------------------------------------------------------------------------------------

function showLogin(error = '') {
  $('chat-view').hidden = true;
  $('login-view').hidden = false;
  $('login-error').textContent = error;
  banner('');
}

function login(user, secret) {
  // Kept per tab only, so a reload logs in again; closing the tab forgets it.
  sessionStorage.setItem(LOGIN_KEY, JSON.stringify({ user, secret }));
  im = new ImClient({ wsUrl, user, secret, clientId: tabClientId(user) });
  window.mqimClient = im; // for debugging from the console
  im.addEventListener('change', render);
  im.addEventListener('connection', (e) => {
    document.body.dataset.connection = e.detail.connected ? 'online' : 'offline';
    if (e.detail.connected) banner('');
    else banner(im.everConnected ? 'Offline: reconnecting…' : 'Connecting…', 'warn');
    render();
  });
  im.addEventListener('auth-failed', (e) => {
    sessionStorage.removeItem(LOGIN_KEY);
    im = null;
    showLogin(e.detail.message);
  });
  im.addEventListener('notice', (e) => showNotice(e.detail.text));
  im.addEventListener('history', (e) => {
    if (e.detail.conv === openConv) renderMessages({ keepTop: true });
  });
  im.addEventListener('synced', () => {
    if (openConv) im.markRead(openConv);
  });
  $('login-view').hidden = true;
  $('chat-view').hidden = false;
  $('me-name').textContent = user;
  document.body.dataset.connection = 'offline';
  banner('Connecting…', 'warn');
  im.start();
  render();
}

function logout() {
  sessionStorage.removeItem(LOGIN_KEY);
  if (im) im.stop();
  im = null;
  openConv = null;
  showLogin();
}

let noticeTimer = null;
function showNotice(text) {
  const n = $('conv-notice');
  n.textContent = text;
  n.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    n.hidden = true;
  }, 6000);
}

// -- rendering ------------------------------------------------------------------------------------

function presenceDot(user) {
  const p = im.presence.get(user);
  const state = p ? p.state : 'unknown';
  return el('span', {
    class: `dot dot-${state}`,
    role: 'img',
    'aria-label': state === 'unknown' ? 'presence unknown' : state,
    dataset: { presence: state },
  });
}

function render() {
  if (!im) return;
  renderList();
  renderConversation();
}

function renderList() {
  const list = $('conv-list');
  const items = im.listed().map((c) => {
    const last = im.lastMessage(c);
    const unread = im.unread(c);
    const typists = im.typists(c);
    const preview = typists.length
      ? `${typists.join(', ')} typing…`
      : last
        ? `${c.isGroup && last.from !== im.me ? `${last.from}: ` : ''}${messageText(last)}`
        : 'No messages yet';
    return el(
      'li',
      { dataset: { conv: c.id } },
      el(
        'button',
        {
          type: 'button',
          class: `conv-item${c.id === openConv ? ' active' : ''}`,
          'aria-current': c.id === openConv ? 'true' : null,
          onclick: () => openConversation(c.id),
        },
        c.isGroup ? el('span', { class: 'dot dot-group', 'aria-hidden': 'true' }) : presenceDot(c.peer),
        el(
          'span',
          { class: 'conv-text' },
          el('span', { class: 'conv-name', text: im.title(c) }),
          el('span', { class: `conv-preview${typists.length ? ' is-typing' : ''}`, text: preview }),
        ),
        unread > 0
          ? el('span', { class: 'badge', 'aria-label': `${unread} unread`, dataset: { unread: String(unread) }, text: String(unread) })
          : null,
      ),
    );
  });
  list.replaceChildren(...items);
}

function messageText(m) {
  if (m.recalled) return 'Message recalled';
  if (m.text) return m.text;
  if (m.data) return '[data]';
  return '';
}

const STATE_LABEL = { sending: 'Sending…', failed: 'Not sent', sent: 'Sent', delivered: 'Delivered', read: 'Read' };

function renderConversation() {
  const c = openConv ? im.convs.get(openConv) : null;
  document.body.dataset.view = c ? 'conversation' : 'list';
  $('composer').hidden = !c;
  $('add-members-toggle').hidden = !(c && c.isGroup && !c.removed);
  if (!c) {
    $('conv-title').textContent = 'No conversation open';
    $('conv-presence').hidden = true;
    $('messages').replaceChildren();
    $('typing').textContent = '';
    return;
  }
  $('conv-title').textContent = im.title(c);
  const dot = $('conv-presence');
  if (c.isGroup) dot.hidden = true;
  else {
    dot.replaceWith(Object.assign(presenceDot(c.peer), { id: 'conv-presence' }));
  }
  const typists = im.typists(c);
  $('typing').textContent = typists.length ? `${typists.join(', ')} ${typists.length > 1 ? 'are' : 'is'} typing…` : '';
  $('composer-input').disabled = c.removed;
  $('send').disabled = c.removed;
  renderMessages({});
  if (document.visibilityState === 'visible' && im.connected) im.markRead(c.id);
}

function renderMessages({ keepTop }) {
  const c = im.convs.get(openConv);
  if (!c) return;
  const box = $('messages');
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const fromBottom = box.scrollHeight - box.scrollTop;
  const rows = [];
  if (c.historyDone) rows.push(el('li', { class: 'system', text: 'Beginning of the conversation' }));
  else if (c.historyLoading) rows.push(el('li', { class: 'system', text: 'Loading older messages…' }));
  for (const m of im.visible(c)) rows.push(messageRow(c, m));
  for (const text of c.notices) rows.push(el('li', { class: 'system', role: 'note', text }));
  box.replaceChildren(...rows);
  if (keepTop) box.scrollTop = box.scrollHeight - fromBottom;
  else if (atBottom || box.dataset.conv !== c.id) box.scrollTop = box.scrollHeight;
  box.dataset.conv = c.id;
  // Not enough to scroll: fetch older messages until it is, or until the start.
  if (box.scrollHeight <= box.clientHeight + 10) im.loadHistory(c.id);
}

function messageRow(c, m) {
  const mine = m.from === im.me;
  const state = im.stateOf(c, m);
  const actions = [];
  if (!m.local && !m.recalled) {
    if (mine) {
      actions.push(
        el('button', { type: 'button', class: 'link', text: 'Edit', 'aria-label': 'Edit message', onclick: () => startEdit(c, m) }),
        el('button', { type: 'button', class: 'link', text: 'Recall', 'aria-label': 'Recall message', onclick: () => im.recall(c.id, m.seq) }),
      );
    }
    actions.push(
      el('button', { type: 'button', class: 'link', text: 'Delete for me', 'aria-label': 'Delete message for me', onclick: () => im.deleteForMe(c.id, m.seq) }),
    );
  }
  if (m.local === 'failed') {
    actions.push(el('button', { type: 'button', class: 'link', text: 'Discard', onclick: () => im.discard(m.id) }));
  }
  let stateText = null;
  if (state) {
    stateText = STATE_LABEL[state] || state;
    if (state === 'sent') stateText = `Sent · #${m.seq}`;
    if (state === 'delivered' && c.isGroup && m.deliveredCount) stateText = `Delivered to ${m.deliveredCount}`;
    if (state === 'read' && c.isGroup) stateText = `Read by ${im.readers(c, m)}`;
  }
  return el(
    'li',
    {
      class: `msg ${mine ? 'mine' : 'theirs'}${m.recalled ? ' recalled' : ''}`,
      dataset: { seq: m.seq ? String(m.seq) : null, id: m.id || null, from: m.from || '' },
    },
    !mine && c.isGroup ? el('span', { class: 'author', text: m.from }) : null,
    el('p', { class: 'body', text: messageText(m) }),
    el(
      'span',
      { class: 'meta' },
      el('time', { text: time(m.ts) }),
      m.edited && !m.recalled ? el('span', { class: 'edited', text: ' · edited' }) : null,
      stateText ? el('span', { class: 'state', dataset: { state }, text: ` · ${stateText}` }) : null,
    ),
    actions.length ? el('span', { class: 'actions' }, ...actions) : null,
  );
}

function startEdit(c, m) {
  editing = { conv: c.id, seq: m.seq };
  $('editing').hidden = false;
  const input = $('composer-input');
  input.value = m.text || '';
  input.focus();
}

function stopEdit() {
  editing = null;
  $('editing').hidden = true;
  $('composer-input').value = '';
}

function openConversation(convId) {
  openConv = convId;
  stopEdit();
  $('add-members-form').hidden = true;
  const c = im.conv(convId);
  render();
  if (c.messages.size === 0) im.loadHistory(convId);
  $('composer-input').focus();
}

// -- wiring ---------------------------------------------------------------------------------------

function members(text) {
  return text
    .split(/[\s,]+/)
    .map((s) => s.trim())
    .filter(Boolean);
}

function wire() {
  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const user = $('login-user').value.trim();
    const secret = $('login-secret').value;
    if (!user || !secret) {
      $('login-error').textContent = 'User and password or token are required';
      return;
    }
    $('login-secret').value = '';
    login(user, secret);
  });
  $('logout').addEventListener('click', logout);
  $('new-chat-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const peer = $('new-chat-user').value.trim();
    if (!peer || !im) return;
    $('new-chat-user').value = '';
    const conv = directConv(im.me, peer);
    im.conv(conv).lastTs = Math.max(im.conv(conv).lastTs, Date.now());
    openConversation(conv);
  });
  $('new-group-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const group = $('new-group-id').value.trim();
    if (!group || !im) return;
    try {
      await im.createGroup(group, $('new-group-name').value.trim(), members($('new-group-members').value));
      $('new-group-form').reset();
      $('new-group').open = false;
      openConversation(`g:${group}`);
    } catch (err) {
      showNotice(`Group not created: ${err.message}`);
    }
  });
  $('add-members-toggle').addEventListener('click', () => {
    const form = $('add-members-form');
    form.hidden = !form.hidden;
    $('add-members-toggle').setAttribute('aria-expanded', String(!form.hidden));
    if (!form.hidden) $('add-members-input').focus();
  });
  $('add-members-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const c = openConv && im.convs.get(openConv);
    if (!c || !c.isGroup) return;
    try {
      const result = await im.addMembers(c.group, members($('add-members-input').value));
      $('add-members-input').value = '';
      $('add-members-form').hidden = true;
      showNotice(`Added ${(result.added || []).join(', ') || 'nobody new'}`);
    } catch (err) {
      showNotice(`Not added: ${err.message}`);
    }
  });
  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = $('composer-input');
    const text = input.value.trim();
    if (!text || !openConv || !im) return;
    if (editing && editing.conv === openConv) im.edit(openConv, editing.seq, text);
    else im.send(openConv, { text });
    stopEdit();
    input.focus();
  });
  $('composer-input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) {
      e.preventDefault();
      $('composer').requestSubmit();
    } else if (e.key === 'Escape' && editing) stopEdit();
  });
  $('composer-input').addEventListener('input', () => {
    if (im && openConv && $('composer-input').value) im.typing(openConv);
  });
  $('cancel-edit').addEventListener('click', stopEdit);
  $('back').addEventListener('click', () => {
    openConv = null;
    render();
  });
  $('messages').addEventListener('scroll', () => {
    if (im && openConv && $('messages').scrollTop < 40 && im.loadHistory(openConv)) renderMessages({ keepTop: true });
  });
  document.addEventListener('visibilitychange', () => {
    if (im && openConv && document.visibilityState === 'visible') im.markRead(openConv);
  });
}

async function main() {
  wire();
  try {
    wsUrl = await loadConfig();
  } catch (err) {
    banner(`Cannot load the configuration: ${err.message}`, 'error');
    return;
  }
  const saved = sessionStorage.getItem(LOGIN_KEY);
  if (saved) {
    const { user, secret } = JSON.parse(saved);
    login(user, secret);
  } else {
    showLogin();
  }
}

main();
