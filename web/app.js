// Herald's web client: the user interface. Everything that speaks to the server is in herald-client.js;
// this module keeps the state shown on screen and renders it with plain DOM calls (no framework, no build).
import { HeraldClient } from './herald-client.js';

const $ = (id) => document.getElementById(id);
const REACTIONS = ['👍', '❤️', '😂', '😮', '😢', '🙏'];
const ROLE_RANK = { member: 0, admin: 1, owner: 2 };

const S = {
  convs: new Map(), // id -> conversation (see fromSummary)
  open: null, // id of the conversation on screen
  receipts: {}, // conversation id -> user id -> {delivered, read}: other members' positions, kept in storage
  presence: new Map(), // user id -> {status, last_seen}
  typing: new Map(), // conversation id -> Map(user id -> timer)
  mode: null, // composer: {kind: 'reply' | 'edit', seq}
  typingSentAt: 0,
  typingIn: null,
  uploads: new Map(), // key -> an upload started from the composer (see startUpload)
  blocked: new Set(), // ids of the users I block
};

const client = new HeraldClient({ reload });
globalThis.herald = client; // handy from the console

const me = () => client.user?.id;

// ---- small helpers ---------------------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k in e && typeof v !== 'string') e[k] = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c != null && c !== false) e.append(c);
  return e;
}

function name(userId) {
  if (!userId) return '';
  if (userId === me()) return 'You';
  const u = client.users.get(userId);
  if (u) return u.username;
  wantProfile(userId);
  return 'someone';
}

const wanted = new Set();
function wantProfile(id) {
  if (wanted.has(id)) return;
  wanted.add(id);
  client.userProfile(id).then(() => {
    scheduleRender({ list: true, messages: true, header: true });
    if ($('dlg-members').open) renderMembers();
  }, () => {});
}

function formatTime(ms) {
  const d = new Date(ms);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return d.toLocaleDateString([], { month: 'short', day: 'numeric' });
}

let toastTimer;
function toast(text) {
  const t = $('toast');
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (t.hidden = true), 6000);
}

function convTitle(c) {
  if (c.kind === 'group') return c.title || 'Group';
  return c.peer ? name(c.peer) : 'Conversation';
}

function systemText(m) {
  const s = m.system;
  const who = name(m.sender);
  switch (s.kind) {
    case 'member_added':
      return `${who} added ${name(s.user_id)}`;
    case 'member_removed':
      return `${who} removed ${name(s.user_id)}`;
    case 'member_left':
      return `${name(s.user_id)} left`;
    case 'role_changed':
      return `${name(s.user_id)} is now ${s.role === 'owner' ? 'the owner' : `${s.role === 'admin' ? 'an' : 'a'} ${s.role}`}`;
    case 'title_changed':
      return `${who} renamed the group to “${s.title}”`;
    default:
      return 'The conversation changed';
  }
}

/** A message's text for a preview or a quote: its body, or what it attaches when the body is empty. */
function snippet(m, length = 80) {
  const text = m.body.replace(/\s+/g, ' ').trim();
  if (text || !m.attachments?.length) return text.slice(0, length);
  const a = m.attachments[0];
  const what = kindOf(a) === 'image' ? 'Photo' : kindOf(a) === 'video' ? 'Video' : a.filename || 'File';
  return `📎 ${what}${m.attachments.length > 1 ? ` and ${m.attachments.length - 1} more` : ''}`;
}

function preview(m) {
  if (!m) return '';
  if (m.system) return systemText(m);
  if (m.deleted) return 'Message deleted';
  return (m.sender === me() ? 'You: ' : '') + snippet(m);
}

// ---- state -----------------------------------------------------------------------------------------------

function fromSummary(s) {
  return {
    id: s.conversation.id,
    kind: s.conversation.kind,
    title: s.conversation.title,
    peer: s.peer ?? null,
    role: s.role,
    last_seq: s.last_seq,
    last_message: s.last_message,
    last_activity_at: s.last_activity_at,
    read: s.read,
    members: null,
    left: false,
    msgs: null, // Map(seq -> message) once opened
    lowest: null, // the lowest seq loaded from history
    next: null, // `from` of the next older page
    complete: false,
    lastBy: new Map(), // user id -> highest seq they sent (sending counts as reading)
  };
}

function fromDetails(d) {
  const mine = d.members.find((m) => m.user_id === me());
  const c = fromSummary({
    conversation: d.conversation,
    role: mine?.role ?? 'member',
    peer: d.conversation.kind === 'direct' ? d.members.find((m) => m.user_id !== me())?.user_id : null,
    last_seq: d.last_seq,
    last_message: null,
    last_activity_at: d.conversation.created_at,
    read: 0,
  });
  c.members = d.members;
  return c;
}

const unread = (c) => Math.max(0, c.last_seq - c.read);

/** The client's reload hook: the conversation list (and the open conversation) from REST. */
async function reload() {
  const [list, blocks] = await Promise.all([client.allConversations(), client.blocks()]);
  S.blocked = new Set(blocks.map((b) => b.user_id));
  const old = S.convs;
  S.convs = new Map();
  for (const s of list) {
    const c = fromSummary(s);
    const prev = old.get(c.id);
    if (prev) c.members = prev.members;
    S.convs.set(c.id, c);
    if (c.peer) wantProfile(c.peer);
    if (unread(c) > 0) client.markDelivered(c.id, c.last_seq);
  }
  renderList();
  if (S.open) {
    if (S.convs.has(S.open)) await openConversation(S.open, { focus: false });
    else closeConversation();
  }
}

/** A conversation this device did not know (created by someone else: its first message tells us). */
function adopt(id) {
  const c = fromSummary({
    conversation: { id, kind: 'group', title: '…', created_at: Date.now() },
    role: 'member',
    last_seq: 0,
    last_message: null,
    last_activity_at: 0,
    read: 0,
  });
  c.pendingDetails = true;
  S.convs.set(id, c);
  client.conversation(id).then(
    (d) => {
      const fresh = fromDetails(d);
      Object.assign(c, { kind: fresh.kind, title: fresh.title, peer: fresh.peer, role: fresh.role, members: d.members, pendingDetails: false });
      if (c.peer) wantProfile(c.peer);
      refreshPresence([c.peer].filter(Boolean));
      scheduleRender({ list: true, header: true });
    },
    () => {},
  );
  client.cursor(id).then((cs) => {
    c.read = Math.max(c.read, cs.read);
    scheduleRender({ list: true });
  }, () => {});
  return c;
}

function refreshDetails(c) {
  return client.conversation(c.id).then(
    (d) => {
      c.members = d.members;
      c.title = d.conversation.title;
      c.role = d.members.find((m) => m.user_id === me())?.role ?? c.role;
      for (const m of d.members) wantProfile(m.user_id);
      scheduleRender({ header: true, messages: true });
      if (!$('dlg-members').hidden && $('dlg-members').open) renderMembers();
      return c;
    },
    (e) => {
      if (e.code === 'not_found') c.left = true;
      scheduleRender({ header: true, list: true });
    },
  );
}

function applyEvent({ event: ev }) {
  if (ev.kind === 'message' || ev.kind === 'message_updated') {
    applyMessage(ev.message, ev.kind === 'message');
  } else if (ev.kind === 'receipt') {
    const r = (S.receipts[ev.conversation_id] ??= {});
    const cur = r[ev.user_id] ?? { delivered: 0, read: 0 };
    r[ev.user_id] = { delivered: Math.max(cur.delivered, ev.delivered, ev.read), read: Math.max(cur.read, ev.read) };
    saveReceipts();
    const c = S.convs.get(ev.conversation_id);
    if (c && ev.user_id === me()) {
      c.read = Math.max(c.read, ev.read);
      scheduleRender({ list: true });
    } else if (c && c.id === S.open) {
      scheduleRender({ ticks: true });
    }
  }
}

function applyMessage(m, isNew) {
  const c = S.convs.get(m.conversation_id) ?? adopt(m.conversation_id);
  c.last_seq = Math.max(c.last_seq, m.seq);
  if (!c.last_message || m.seq >= c.last_message.seq) c.last_message = m;
  if (isNew) c.last_activity_at = Math.max(c.last_activity_at, m.sent_at);
  if (m.sender === me()) c.read = Math.max(c.read, m.seq);
  c.lastBy.set(m.sender, Math.max(c.lastBy.get(m.sender) ?? 0, m.seq));
  if (c.msgs && (c.lowest == null || m.seq >= c.lowest)) {
    c.msgs.set(m.seq, m);
    if (c.id === S.open) renderMessage(c, m);
  }
  if (isNew && m.system) {
    const s = m.system;
    if (s.kind === 'title_changed') c.title = s.title;
    if ((s.kind === 'member_removed' || s.kind === 'member_left') && s.user_id === me()) c.left = true;
    else if (s.kind === 'member_added' && s.user_id === me()) c.left = false;
    if (!c.left && !c.pendingDetails) refreshDetails(c);
  }
  if (isNew && m.sender !== me()) {
    stopTyping(c.id, m.sender);
    client.markDelivered(c.id, m.seq);
  }
  scheduleRender({ list: true, header: c.id === S.open, read: c.id === S.open });
}

let receiptsTimer;
function saveReceipts() {
  clearTimeout(receiptsTimer);
  receiptsTimer = setTimeout(() => client.saveUserData('receipts', S.receipts), 300);
}

// ---- rendering: scheduling -------------------------------------------------------------------------------

let dirty = {};
let frame = 0;
function scheduleRender(what) {
  Object.assign(dirty, what);
  if (!frame) frame = requestAnimationFrame(flushRender);
}

function flushRender() {
  frame = 0;
  const d = dirty;
  dirty = {};
  if (d.list) renderList();
  const c = S.convs.get(S.open);
  if (c) {
    if (d.header) renderHeader(c);
    if (d.messages) rerenderMessages(c);
    else if (d.ticks) renderTicks(c);
    markRuns();
    if (d.read) checkRead();
  }
}

/** Consecutive messages of one sender within 5 minutes form a run: only the first shows the name. */
function markRuns() {
  let prev = null;
  for (const li of $('message-list').children) {
    const run = prev && li.dataset.sender && prev.dataset.sender === li.dataset.sender && li.dataset.time - prev.dataset.time < 300_000;
    li.classList.toggle('cont', Boolean(run));
    prev = li.classList.contains('system') ? null : li;
  }
}

// ---- rendering: the conversation list --------------------------------------------------------------------

/** A peer's status; "unknown" while this device is not connected (what it knew may be stale). */
function presenceOf(userId) {
  if (!client.online) return 'unknown';
  return S.presence.get(userId)?.status ?? 'offline';
}

function renderList() {
  const ul = $('conv-list');
  const focused = document.activeElement?.closest?.('#conv-list .conv')?.dataset.id;
  const convs = [...S.convs.values()].sort((a, b) => b.last_activity_at - a.last_activity_at);
  ul.replaceChildren(
    ...convs.map((c) => {
      const n = unread(c);
      const typing = typingNames(c.id);
      const status = c.kind === 'direct' && c.peer ? presenceOf(c.peer) : null;
      const statusLabel = status === 'unknown' ? 'status unknown while reconnecting' : status;
      return el(
        'li',
        {},
        el(
          'button',
          { type: 'button', class: 'conv', dataset: { id: c.id }, 'aria-current': c.id === S.open ? 'true' : 'false', onclick: () => openConversation(c.id) },
          status ? el('span', { class: `dot ${status}`, role: 'img', 'aria-label': statusLabel }) : el('span', { class: 'dot group', 'aria-hidden': 'true' }),
          el(
            'span',
            { class: 'conv-main' },
            el('span', { class: 'conv-title', text: convTitle(c) }),
            el('span', { class: `conv-last${typing ? ' is-typing' : ''}`, text: typing ? `${typing} typing…` : c.left ? 'You are no longer a member' : preview(c.last_message) }),
          ),
          el(
            'span',
            { class: 'conv-meta' },
            c.last_message ? el('time', { datetime: new Date(c.last_message.sent_at).toISOString(), text: formatTime(c.last_message.sent_at) }) : null,
            n > 0 ? el('span', { class: 'badge', text: String(n), 'aria-label': `${n} unread` }) : null,
          ),
        ),
      );
    }),
  );
  $('conv-empty').hidden = convs.length > 0;
  if (focused) ul.querySelector(`.conv[data-id="${focused}"]`)?.focus();
  const total = convs.reduce((s, c) => s + unread(c), 0);
  document.title = total ? `(${total}) Herald` : 'Herald';
}

// ---- rendering: the open conversation --------------------------------------------------------------------

function renderHeader(c) {
  $('chat-title').textContent = convTitle(c);
  const sub = $('chat-sub');
  const dot = $('chat-dot');
  if (c.kind === 'direct' && c.peer) {
    const p = S.presence.get(c.peer);
    const status = presenceOf(c.peer);
    dot.className = `dot ${status}`;
    dot.hidden = false;
    sub.textContent = status === 'unknown' ? '' : status === 'offline' && p?.last_seen ? `last seen ${formatTime(p.last_seen)}` : status;
    $('members-btn').hidden = true;
  } else {
    dot.hidden = true;
    sub.textContent = c.members ? `${c.members.length} members` : 'group';
    $('members-btn').hidden = false;
  }
  const blocking = c.kind === 'direct' && c.peer && S.blocked.has(c.peer);
  $('block-btn').hidden = !(c.kind === 'direct' && c.peer);
  $('block-btn').textContent = blocking ? 'Unblock' : 'Block';
  const disabled = c.left || blocking;
  $('composer-input').disabled = disabled;
  $('send').disabled = disabled;
  $('attach').disabled = disabled;
  $('composer-input').placeholder = c.left
    ? 'You are no longer a member of this conversation'
    : blocking
      ? 'You blocked this user. Unblock them to write.'
      : 'Message';
}

async function toggleBlock() {
  const c = S.convs.get(S.open);
  if (!c?.peer) return;
  try {
    if (S.blocked.has(c.peer)) {
      await client.unblock(c.peer);
      S.blocked.delete(c.peer);
    } else {
      if (!confirm(`Block ${name(c.peer)}? Neither of you can then write to the other directly or see the other's typing and presence.`)) return;
      await client.block(c.peer);
      S.blocked.add(c.peer);
    }
    renderHeader(c);
  } catch (e) {
    toast(`That did not work: ${e.message}`);
  }
}

function otherMembers(c) {
  if (c.kind === 'direct') return c.peer ? [c.peer] : [];
  if (c.members) return c.members.map((m) => m.user_id).filter((u) => u !== me());
  return Object.keys(S.receipts[c.id] ?? {}).filter((u) => u !== me());
}

/**
 * sent / delivered / read for one of my messages, from the other members' receipts (members who joined after it
 * was sent do not count).
 */
function tickState(c, seq) {
  const sentAt = c.msgs?.get(seq)?.sent_at ?? 0;
  const others = otherMembers(c).filter((u) => !(c.members?.find((m) => m.user_id === u)?.joined_at > sentAt));
  if (!others.length) return 'sent';
  let del = Infinity;
  let read = Infinity;
  for (const u of others) {
    const r = S.receipts[c.id]?.[u] ?? {};
    const rd = Math.max(r.read ?? 0, c.lastBy.get(u) ?? 0);
    read = Math.min(read, rd);
    del = Math.min(del, Math.max(r.delivered ?? 0, rd));
  }
  return seq <= read ? 'read' : seq <= del ? 'delivered' : 'sent';
}

const TICKS = { pending: ['🕓', 'Sending'], sent: ['✓', 'Sent'], delivered: ['✓✓', 'Delivered'], read: ['✓✓', 'Read'], failed: ['!', 'Not sent'] };

/** The ticks of one of my messages; the last one also spells its state out (colour is not the only cue). */
function tickEl(state, spelled = false) {
  const [glyph, label] = TICKS[state];
  return el(
    'span',
    { class: `ticks ${state}`, dataset: { state, spelled: spelled ? '1' : '' }, role: 'img', 'aria-label': label, title: label },
    el('span', { 'aria-hidden': 'true', text: glyph }),
    spelled ? el('span', { class: 'tick-label', 'aria-hidden': 'true', text: label }) : null,
  );
}

function renderTicks(c) {
  const mine = [...$('message-list').querySelectorAll('.msg.mine[data-seq]')];
  const last = mine.filter((li) => li.querySelector('.ticks')).at(-1);
  for (const li of mine) {
    const t = li.querySelector('.ticks');
    if (!t) continue;
    const state = tickState(c, Number(li.dataset.seq));
    const spelled = li === last ? '1' : '';
    if (t.dataset.state !== state || t.dataset.spelled !== spelled) t.replaceWith(tickEl(state, li === last));
  }
}

function renderHistoryStatus(c) {
  $('history-status').textContent = c.loading
    ? 'Loading earlier messages…'
    : c.complete
      ? c.msgs?.size
        ? 'This is the start of the conversation.'
        : 'No messages yet. Say hello!'
      : '';
}

function canDelete(c, m) {
  return m.sender === me() || (c.kind === 'group' && ROLE_RANK[c.role] >= 1);
}

function messageEl(c, m) {
  if (m.system) {
    return el('li', { class: 'msg system', tabindex: '-1', dataset: { seq: m.seq } }, el('span', { text: systemText(m) }));
  }
  const mine = m.sender === me();
  const seqAttr = { seq: m.seq };
  const reply = m.reply_to ? c.msgs.get(m.reply_to) : null;
  const reactions = Object.entries(m.reactions ?? {});
  return el(
    'li',
    { class: `msg${mine ? ' mine' : ''}${m.deleted ? ' deleted' : ''}`, tabindex: '-1', dataset: { ...seqAttr, sender: m.sender, time: m.sent_at } },
    el(
      'div',
      { class: 'meta' },
      el('span', { class: 'sender', text: name(m.sender) }),
      el('time', { datetime: new Date(m.sent_at).toISOString(), text: formatTime(m.sent_at) }),
      m.edited_at && !m.deleted ? el('span', { class: 'edited', text: '(edited)' }) : null,
    ),
    m.reply_to && !m.deleted
      ? el(
          'button',
          { type: 'button', class: 'reply-ref', dataset: { goto: m.reply_to }, tabindex: '-1' },
          el('span', { class: 'visually-hidden', text: 'In reply to ' }),
          reply ? `${name(reply.sender)}: ${reply.deleted ? 'deleted message' : snippet(reply, 100)}` : `message #${m.reply_to}`,
        )
      : null,
    m.deleted ? null : attachmentsEl(m.attachments),
    m.deleted || m.body || !m.attachments?.length ? el('p', { class: 'body', text: m.deleted ? 'This message was deleted' : m.body }) : null,
    reactions.length
      ? el(
          'div',
          { class: 'reactions' },
          reactions.map(([emoji, users]) => {
            const pressed = users.includes(me());
            return el('button', {
              type: 'button',
              class: 'reaction',
              'aria-pressed': pressed ? 'true' : 'false',
              'aria-label': `${emoji} ${users.length}${pressed ? ', including you' : ''}`,
              title: users.map(name).join(', '),
              dataset: { act: 'toggle-reaction', emoji },
              text: `${emoji} ${users.length}`,
            });
          }),
        )
      : null,
    mine && !m.deleted ? tickEl(tickState(c, m.seq)) : null,
    m.deleted || c.left
      ? null
      : el(
          'div',
          { class: 'actions', role: 'group', 'aria-label': 'Message actions' },
          el('button', { type: 'button', class: 'small', dataset: { act: 'reply' }, text: 'Reply' }),
          el('button', { type: 'button', class: 'small', dataset: { act: 'react' }, 'aria-expanded': 'false', text: 'React' }),
          mine ? el('button', { type: 'button', class: 'small', dataset: { act: 'edit' }, text: 'Edit' }) : null,
          canDelete(c, m) ? el('button', { type: 'button', class: 'small danger', dataset: { act: 'delete' }, text: 'Delete' }) : null,
          mine ? null : el('button', { type: 'button', class: 'small', dataset: { act: 'report' }, text: 'Report' }),
        ),
  );
}

// ---- rendering: attachments ------------------------------------------------------------------------------

/** image, video or file: how an attachment is shown (from the type the server sniffed, never the name). */
function kindOf(a) {
  const t = a.content_type ?? '';
  return t.startsWith('image/') ? 'image' : t.startsWith('video/') ? 'video' : 'file';
}

function formatSize(bytes) {
  if (bytes == null) return '';
  if (bytes < 1024) return `${bytes} bytes`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let n = bytes / 1024;
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n < 10 ? n.toFixed(1).replace(/\.0$/, '') : Math.round(n)} ${units[i]}`;
}

/** The size to show a picture at: within a `max` px box, never upscaled (null when the size is not known). */
function fitBox(w, h, max) {
  if (!w || !h) return null;
  const k = Math.min(1, max / w, max / h);
  return [Math.max(1, Math.round(w * k)), Math.max(1, Math.round(h * k))];
}

/** Gives `el` a fixed size (and aspect ratio) before its bytes arrive, so the log does not jump when they do. */
function reserve(e, box) {
  if (!box) return;
  e.width = box[0];
  e.height = box[1];
  // Through the CSSOM: the page's CSP refuses inline style attributes, not this.
  e.style.aspectRatio = `${box[0]} / ${box[1]}`;
}

/** The first of `names` the upload has (variants are absent when the server made none, e.g. no upscaling). */
function variant(info, names) {
  for (const n of names) if (info.variants?.[n]?.url) return info.variants[n];
  return null;
}

/**
 * Fills in the signed URLs of attachment `a` with `apply(info)`: at once when client.media() has them cached
 * (re-renders do not flicker), else when they arrive. `holder` shows a failure.
 */
function withMedia(a, holder, apply) {
  const failed = () => {
    holder.classList.add('unavailable');
    holder.removeAttribute('href');
    holder.title = 'This attachment is no longer available';
  };
  const use = (info) => (info.state === 'ready' ? apply(info) : failed());
  const hit = client.cachedMedia(a.media_id);
  if (hit) use(hit);
  else client.media(a.media_id).then(use, failed);
  return failed;
}

function attachmentsEl(list) {
  if (!list?.length) return null;
  return el('div', { class: 'attachments' }, list.map(attachmentEl));
}

function attachmentEl(a) {
  const label = a.filename || 'attachment';
  const size = formatSize(a.size);
  if (kindOf(a) === 'image') {
    const img = el('img', { alt: label, decoding: 'async' });
    reserve(img, fitBox(a.width, a.height, 300));
    const link = el('a', { class: 'att att-image', target: '_blank', rel: 'noopener noreferrer', title: `${label} (${size}): open the original`, dataset: { media: a.media_id } }, img);
    const apply = (info) => {
      const thumb = variant(info, ['thumb_300', 'thumb_150', 'original']);
      const original = variant(info, ['original']);
      if (thumb) img.src = thumb.url;
      if (original) link.href = original.url;
    };
    const failed = withMedia(a, link, apply);
    // A URL that stopped working (expired while the page slept, or taken down): ask once for fresh ones.
    let retried = false;
    img.addEventListener('error', () => {
      if (retried) return failed();
      retried = true;
      client.media(a.media_id, { fresh: true }).then((info) => (info.state === 'ready' ? apply(info) : failed()), failed);
    });
    return link;
  }
  if (kindOf(a) === 'video') {
    const video = el('video', { controls: true, preload: 'metadata', 'aria-label': label, dataset: { media: a.media_id } });
    reserve(video, fitBox(a.width, a.height, 360));
    const caption = el('a', { class: 'att-caption', target: '_blank', rel: 'noopener noreferrer', download: label }, `${label} · ${size}`);
    withMedia(a, caption, (info) => {
      const poster = variant(info, ['poster', 'thumb_600', 'thumb_300']);
      const source = variant(info, ['720p', '360p', 'original']);
      if (poster) video.poster = poster.url;
      if (source) video.append(el('source', { src: source.url, type: source.content_type }));
      const original = variant(info, ['original']);
      if (original) caption.href = original.url;
    });
    return el('figure', { class: 'att att-video' }, video, el('figcaption', {}, caption));
  }
  const link = el(
    'a',
    { class: 'att att-file', download: label, rel: 'noopener noreferrer', dataset: { media: a.media_id } },
    el('span', { class: 'att-icon', 'aria-hidden': 'true', text: '📄' }),
    el('span', { class: 'att-name', text: label }),
    el('span', { class: 'att-size', text: size }),
  );
  withMedia(a, link, (info) => {
    const original = variant(info, ['original']);
    if (original) link.href = original.url;
  });
  return link;
}

function pendingEl(e) {
  const failed = e.state === 'failed';
  return el(
    'li',
    { class: `msg mine pending${failed ? ' failed' : ''}`, tabindex: '-1', dataset: { cmid: e.client_msg_id, sender: me(), time: e.created_at } },
    el('div', { class: 'meta' }, el('span', { class: 'sender', text: 'You' })),
    e.reply_to ? el('p', { class: 'reply-ref', text: `In reply to message #${e.reply_to}` }) : null,
    attachmentsEl(e.attachment_info),
    e.body || !e.attachment_info?.length ? el('p', { class: 'body', text: e.body }) : null,
    failed
      ? el(
          'div',
          { class: 'send-failed' },
          tickEl('failed'),
          el('span', { class: 'error', text: `Not sent: ${e.error?.message ?? 'failed'}` }),
          el('button', { type: 'button', class: 'small', dataset: { act: 'retry' }, text: 'Retry' }),
          el('button', { type: 'button', class: 'small', dataset: { act: 'discard' }, text: 'Discard' }),
        )
      : el('span', { class: 'sending' }, tickEl('pending'), client.online ? ' Sending…' : ' Waiting for the connection…'),
  );
}

/** Inserts or replaces the element of message `m` in seq order (pending sends stay last). */
function renderMessage(c, m) {
  const list = $('message-list');
  const fresh = messageEl(c, m);
  const old = list.querySelector(`.msg[data-seq="${m.seq}"]`);
  if (old) {
    const hadFocus = old.contains(document.activeElement);
    const wasOpen = old.querySelector('.react-picker');
    old.replaceWith(fresh);
    scheduleRender({ ticks: m.sender === me() });
    if (wasOpen && !m.deleted) toggleReactPicker(fresh, false);
    if (hadFocus) fresh.focus();
    return;
  }
  const atBottom = nearBottom();
  let before = null;
  for (const child of list.children) {
    if (child.dataset.cmid || Number(child.dataset.seq) > m.seq) {
      before = child;
      break;
    }
  }
  list.insertBefore(fresh, before);
  scheduleRender({ ticks: m.sender === me() });
  if (c.msgs.size === 1) renderHistoryStatus(c);
  if (!before) {
    if (atBottom || m.sender === me()) scrollToBottom();
    else $('jump').hidden = false;
  }
}

function rerenderMessages(c) {
  if (!c.msgs) return;
  const list = $('message-list');
  const focusedSeq = document.activeElement?.closest?.('.msg')?.dataset.seq;
  const seqs = [...c.msgs.keys()].sort((a, b) => a - b);
  list.replaceChildren(...seqs.map((s) => messageEl(c, c.msgs.get(s))));
  renderPending(c);
  renderTicks(c);
  if (focusedSeq) list.querySelector(`.msg[data-seq="${focusedSeq}"]`)?.focus();
}

function renderPending(c) {
  const list = $('message-list');
  for (const li of list.querySelectorAll('.msg.pending')) li.remove();
  const atBottom = nearBottom();
  for (const e of client.outbox) if (e.conversation_id === c.id) list.append(pendingEl(e));
  if (atBottom) scrollToBottom();
  scheduleRender({});
}

function nearBottom() {
  const m = $('messages');
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

function scrollToBottom() {
  const m = $('messages');
  m.scrollTop = m.scrollHeight;
  $('jump').hidden = true;
}

// ---- opening a conversation, history ---------------------------------------------------------------------

async function openConversation(id, { focus = true } = {}) {
  const c = S.convs.get(id);
  if (!c) return;
  const switching = S.open !== id;
  if (switching) {
    setMode(null);
    sendTyping(false);
    $('composer-input').value = '';
    autosize();
  }
  S.open = id;
  document.body.classList.add('chat-open');
  $('chat-empty').hidden = true;
  $('chat-pane').hidden = false;
  $('composer-error').textContent = '';
  renderUploads();
  renderHeader(c);
  renderList();
  renderTypingLine();
  // Always start from the newest page: cheap, and consistent after a reconnect or a resync.
  c.msgs = new Map();
  c.lowest = null;
  c.next = null;
  c.complete = false;
  $('message-list').replaceChildren();
  renderPending(c);
  if (c.kind === 'group' && !c.left) refreshDetails(c);
  if (focus) $('composer-input').disabled ? $('chat-title').focus() : $('composer-input').focus();
  try {
    await loadOlder(c, true);
    // Fill the screen: keep loading while there is no scroll bar yet.
    while (S.open === id && !c.complete && $('messages').scrollHeight <= $('messages').clientHeight) await loadOlder(c, true);
  } catch (e) {
    $('history-status').textContent = `Could not load the history: ${e.message}`;
    return;
  }
  if (S.open !== id) return;
  scrollToBottom();
  if (c.last_seq > 0) client.markDelivered(c.id, c.last_seq);
  checkRead();
}

function closeConversation() {
  sendTyping(false);
  S.open = null;
  document.body.classList.remove('chat-open');
  $('chat-pane').hidden = true;
  $('chat-empty').hidden = false;
  renderList();
}

async function loadOlder(c, first = false) {
  if (c.loading || c.complete) return;
  c.loading = true;
  const box = $('messages');
  renderHistoryStatus(c);
  try {
    const page = await client.history(c.id, { from: c.lowest == null ? undefined : c.next, dir: 'backward', limit: 50 });
    if (S.open !== c.id || !c.msgs) return;
    const added = [];
    for (const m of page.messages) {
      c.lastBy.set(m.sender, Math.max(c.lastBy.get(m.sender) ?? 0, m.seq));
      if (!c.msgs.has(m.seq)) {
        c.msgs.set(m.seq, m);
        added.push(m);
      }
      c.lowest = c.lowest == null ? m.seq : Math.min(c.lowest, m.seq);
    }
    if (c.lowest == null) c.lowest = page.last_seq + 1;
    c.next = page.next;
    c.complete = page.next == null;
    c.last_seq = Math.max(c.last_seq, page.last_seq);
    // Prepend, keeping what the reader looks at in place.
    const fromBottom = box.scrollHeight - box.scrollTop;
    const list = $('message-list');
    const frag = document.createDocumentFragment();
    added.sort((a, b) => a.seq - b.seq);
    const firstExisting = list.querySelector('.msg[data-seq]');
    const lowestExisting = firstExisting ? Number(firstExisting.dataset.seq) : Infinity;
    for (const m of added) {
      if (m.seq < lowestExisting) frag.append(messageEl(c, m));
      else renderMessage(c, m);
    }
    list.prepend(frag);
    if (!first) box.scrollTop = box.scrollHeight - fromBottom;
    renderTicks(c);
    markRuns();
  } finally {
    c.loading = false;
    if (S.open === c.id) renderHistoryStatus(c);
  }
}

// ---- read and delivered ---------------------------------------------------------------------------------

let readFrame = 0;
function checkRead() {
  if (readFrame) return;
  readFrame = requestAnimationFrame(() => {
    readFrame = 0;
    const c = S.convs.get(S.open);
    if (!c || !c.msgs || document.visibilityState !== 'visible') return;
    const box = $('messages');
    const bottom = box.getBoundingClientRect().bottom + 4;
    let max = 0;
    for (const li of $('message-list').querySelectorAll('.msg[data-seq]')) {
      const r = li.getBoundingClientRect();
      if (r.bottom <= bottom && r.bottom > 0) max = Math.max(max, Number(li.dataset.seq));
    }
    if (max > c.read) {
      c.read = max;
      client.markRead(c.id, max);
      scheduleRender({ list: true });
    }
    if (nearBottom()) $('jump').hidden = true;
  });
}

// ---- typing ---------------------------------------------------------------------------------------------

function typingNames(convId) {
  const t = S.typing.get(convId);
  if (!t || !t.size) return '';
  const names = [...t.keys()].map(name);
  return names.length === 1 ? `${names[0]} is` : names.length === 2 ? `${names[0]} and ${names[1]} are` : `${names.length} people are`;
}

function stopTyping(convId, userId) {
  const t = S.typing.get(convId);
  if (!t?.has(userId)) return;
  clearTimeout(t.get(userId));
  t.delete(userId);
  renderTypingLine();
  scheduleRender({ list: true });
}

function onTyping(f) {
  if (f.user_id === me()) return;
  if (!S.typing.has(f.conversation_id)) S.typing.set(f.conversation_id, new Map());
  const t = S.typing.get(f.conversation_id);
  clearTimeout(t.get(f.user_id));
  if (f.active) t.set(f.user_id, setTimeout(() => stopTyping(f.conversation_id, f.user_id), f.ttl_ms));
  else t.delete(f.user_id);
  renderTypingLine();
  scheduleRender({ list: true });
}

function renderTypingLine() {
  const who = S.open ? typingNames(S.open) : '';
  $('typing').textContent = who ? `${who} typing…` : '';
}

function sendTyping(active) {
  const id = active ? S.open : S.typingIn;
  if (!id) return;
  const now = Date.now();
  if (active) {
    if (S.typingIn === id && now - S.typingSentAt < 2500) return; // repeat about every 2.5 s while typing
    if (S.typingIn && S.typingIn !== id) client.typing(S.typingIn, false);
    if (client.typing(id, true)) {
      S.typingIn = id;
      S.typingSentAt = now;
    }
  } else {
    client.typing(id, false);
    S.typingIn = null;
    S.typingSentAt = 0;
  }
}

// ---- presence -------------------------------------------------------------------------------------------

function onPresence(f) {
  for (const u of f.users) S.presence.set(u.user_id, { status: u.status, last_seen: u.last_seen });
  scheduleRender({ list: true, header: true });
  if ($('dlg-members').open) renderMembers();
}

async function refreshPresence(ids) {
  if (!client.online) return;
  const users = ids ?? [...new Set([...S.convs.values()].map((c) => c.peer).filter(Boolean))];
  if (!users.length) return;
  try {
    onPresence({ users: await client.queryPresence(users) });
  } catch {
    /* best effort */
  }
}

// ---- the connection line --------------------------------------------------------------------------------

let countdown;
function onStatus(s) {
  clearInterval(countdown);
  const text = $('conn-text');
  const box = $('conn');
  box.dataset.state = s.state;
  $('conn-retry').hidden = s.state !== 'reconnecting' || !s.retryInMs;
  if (s.state === 'reconnecting') {
    const until = Date.now() + (s.retryInMs ?? 0);
    const tick = () => {
      const left = Math.ceil((until - Date.now()) / 1000);
      text.textContent = left > 0 ? `Reconnecting… next attempt in ${left} s` : 'Reconnecting…';
    };
    tick();
    // Only the visible text counts down; the live region is announced once (aria-live reads changes, so
    // keep the countdown out of it by updating a child that is aria-hidden).
    countdown = setInterval(tick, 1000);
  } else {
    text.textContent = { online: 'Connected', connecting: 'Connecting…', syncing: 'Catching up…', offline: 'Offline' }[s.state] ?? s.state;
  }
  const c = S.convs.get(S.open);
  if (c) renderPending(c);
  scheduleRender({ list: true, header: true });
  if (s.state === 'online') refreshPresence();
}

// ---- composer ------------------------------------------------------------------------------------------

function setMode(mode) {
  S.mode = mode;
  const box = $('composer-context');
  const input = $('composer-input');
  if (!mode) {
    box.hidden = true;
    return;
  }
  const c = S.convs.get(S.open);
  const m = c?.msgs?.get(mode.seq);
  box.hidden = false;
  if (mode.kind === 'reply') {
    $('composer-context-text').textContent = `Replying to ${m ? `${name(m.sender)}: ${snippet(m)}` : `message #${mode.seq}`}`;
  } else {
    $('composer-context-text').textContent = 'Editing your message';
    input.value = m?.body ?? '';
    autosize();
  }
  input.focus();
}

function autosize() {
  const t = $('composer-input');
  t.style.height = 'auto';
  t.style.height = `${Math.min(t.scrollHeight, 160)}px`;
}

async function submitComposer() {
  const c = S.convs.get(S.open);
  const input = $('composer-input');
  const body = input.value;
  if (!c || c.left || !body.trim()) return;
  $('composer-error').textContent = '';
  if (S.mode?.kind === 'edit') {
    const seq = S.mode.seq;
    // Leave edit mode at once, so what is typed next is a new message, not a second edit of this one; the
    // text comes back with the error if the edit fails.
    input.value = '';
    setMode(null);
    try {
      const m = await client.edit(c.id, seq, body);
      applyMessage(m, false);
    } catch (e) {
      $('composer-error').textContent = `Could not edit: ${e.message}`;
      if (!input.value) {
        setMode({ kind: 'edit', seq });
        input.value = body;
      }
    }
  } else {
    const replyTo = S.mode?.kind === 'reply' ? S.mode.seq : null;
    client.send(c.id, body, { replyTo });
    input.value = '';
    setMode(null);
    scrollToBottom();
  }
  autosize();
  sendTyping(false);
}

// ---- composer: attachments ------------------------------------------------------------------------------

/** What the pipeline's rejection reasons (docs/media.md) mean, for people. */
const REJECTIONS = {
  type_not_allowed: 'this kind of file is not accepted',
  malware: 'the virus scanner found malware in it',
  scan_failed: 'it could not be scanned for viruses',
  blocked: 'it matches an image that is not allowed',
  moderation_failed: 'it could not be checked by moderation',
  too_large: 'it is too large',
  corrupt: 'the file is damaged or not what it claims to be',
  taken_down: 'this content was taken down',
  expired: 'the upload took too long',
  failed: 'it could not be processed',
};

let uploadKeys = 0;

/**
 * Uploads a file picked (dropped, pasted) in the open conversation. It shows in the composer with its progress;
 * once the server has it ready, the message is sent with it and whatever text is in the box (possibly none).
 * A refusal stays in the composer with its reason, and nothing is sent.
 */
function startUpload(file, u = null) {
  const c = S.convs.get(S.open);
  if (!c || c.left) return;
  u ??= { key: `u${++uploadKeys}`, convId: c.id, file };
  Object.assign(u, { state: 'uploading', sent: 0, total: file.size, error: null, controller: new AbortController() });
  S.uploads.set(u.key, u);
  renderUploads();
  client
    .upload(file, {
      signal: u.controller.signal,
      onProgress: (p) => {
        u.sent = p.sent;
        u.state = p.phase;
        renderUploads();
      },
    })
    .then(
      (info) => {
        S.uploads.delete(u.key);
        renderUploads();
        sendWithAttachment(u.convId, info);
      },
      (e) => {
        if (e.code === 'aborted') {
          S.uploads.delete(u.key);
        } else {
          u.state = e.code === 'rejected' ? 'rejected' : 'failed';
          u.error = e;
        }
        renderUploads();
      },
    );
}

function sendWithAttachment(convId, info) {
  const open = S.open === convId;
  const input = $('composer-input');
  // The text in the box goes with it, unless the box holds something else (an edit, or another conversation).
  const takeText = open && S.mode?.kind !== 'edit';
  const body = takeText ? input.value : '';
  const replyTo = takeText && S.mode?.kind === 'reply' ? S.mode.seq : null;
  client.send(convId, body.trim() ? body : '', { replyTo, attachments: [info] });
  if (takeText) {
    input.value = '';
    setMode(null);
    autosize();
    sendTyping(false);
    scrollToBottom();
  }
}

function uploadStatus(u) {
  const pct = u.total ? Math.floor((100 * u.sent) / u.total) : 100;
  switch (u.state) {
    case 'uploading':
      return `Uploading… ${pct}%`;
    case 'processing':
      return 'Checking…';
    case 'rejected':
      return `refused: ${u.error.reason}${REJECTIONS[u.error.reason] ? ` (${REJECTIONS[u.error.reason]})` : ''}`;
    default:
      return `Could not upload: ${u.error?.message ?? 'failed'}`;
  }
}

function renderUploads() {
  const ul = $('composer-uploads');
  const mine = [...S.uploads.values()].filter((u) => u.convId === S.open);
  ul.hidden = !mine.length;
  // Items are updated in place while their state stays the same: a progress step must not re-create (and so
  // re-announce) the alert of another upload's refusal.
  const old = new Map([...ul.children].map((li) => [li.dataset.key, li]));
  const atBottom = nearBottom(); // the list takes room from the log: keep the newest message in view
  ul.replaceChildren(
    ...mine.map((u) => {
      const li = old.get(u.key);
      if (li && li.dataset.state === u.state) {
        const bar = li.querySelector('progress');
        if (bar && u.state === 'uploading') bar.value = u.sent;
        li.querySelector('.upload-state').textContent = uploadStatus(u);
        return li;
      }
      return uploadEl(u);
    }),
  );
  if (atBottom) scrollToBottom();
}

function uploadEl(u) {
  const busy = u.state === 'uploading' || u.state === 'processing';
  const name = u.file.name || 'file';
  return el(
    'li',
    { class: `upload ${u.state}`, dataset: { key: u.key, state: u.state } },
    el('span', { class: 'upload-name', text: name }),
    el('span', { class: 'upload-size', text: formatSize(u.total) }),
    busy ? el('progress', { max: u.total || 1, value: u.state === 'processing' ? null : u.sent, 'aria-label': `Uploading ${name}` }) : null,
    // A refusal or a failure is announced (role=alert); progress is not, it would be too chatty.
    el('span', { class: busy ? 'upload-state' : 'upload-state error', role: busy ? null : 'alert', text: uploadStatus(u) }),
    !busy && u.error?.detail ? el('span', { class: 'upload-detail', text: u.error.detail }) : null,
    u.state === 'failed' ? el('button', { type: 'button', class: 'small', dataset: { upload: 'retry' }, 'aria-label': `Retry uploading ${name}`, text: 'Retry' }) : null,
    el('button', {
      type: 'button',
      class: 'small',
      dataset: { upload: busy ? 'cancel' : 'dismiss' },
      'aria-label': `${busy ? 'Cancel uploading' : 'Dismiss'} ${name}`,
      text: busy ? 'Cancel' : 'Dismiss',
    }),
  );
}

function onUploadAction(ev) {
  const btn = ev.target.closest('button[data-upload]');
  const u = btn && S.uploads.get(btn.closest('.upload')?.dataset.key);
  if (!u) return;
  if (btn.dataset.upload === 'cancel') u.controller.abort();
  else if (btn.dataset.upload === 'retry') return startUpload(u.file, u);
  S.uploads.delete(u.key);
  renderUploads();
  $('composer-input').focus();
}

// ---- message actions ------------------------------------------------------------------------------------

function toggleReactPicker(li, focus = true) {
  const existing = li.querySelector('.react-picker');
  const btn = li.querySelector('[data-act="react"]');
  if (existing) {
    existing.remove();
    btn?.setAttribute('aria-expanded', 'false');
    if (focus) btn?.focus();
    return;
  }
  const picker = el(
    'div',
    { class: 'react-picker', role: 'group', 'aria-label': 'Choose a reaction' },
    REACTIONS.map((e) => el('button', { type: 'button', class: 'small', dataset: { act: 'pick-reaction', emoji: e }, 'aria-label': `React with ${e}`, text: e })),
  );
  li.querySelector('.actions')?.after(picker);
  btn?.setAttribute('aria-expanded', 'true');
  if (focus) picker.querySelector('button').focus();
}

async function onMessageAction(ev) {
  const btn = ev.target.closest('button[data-act], button[data-goto]');
  if (!btn) return;
  const li = btn.closest('.msg');
  const c = S.convs.get(S.open);
  if (!c || !li) return;
  if (btn.dataset.goto) {
    const target = $('message-list').querySelector(`.msg[data-seq="${btn.dataset.goto}"]`);
    target?.scrollIntoView({ block: 'center' });
    target?.focus();
    return;
  }
  const seq = Number(li.dataset.seq);
  const m = c.msgs?.get(seq);
  try {
    switch (btn.dataset.act) {
      case 'reply':
        return setMode({ kind: 'reply', seq });
      case 'edit':
        return setMode({ kind: 'edit', seq });
      case 'react':
        return toggleReactPicker(li);
      case 'pick-reaction': {
        const users = m?.reactions?.[btn.dataset.emoji] ?? [];
        toggleReactPicker(li, false);
        li.focus();
        return applyMessage(await client.react(c.id, seq, btn.dataset.emoji, !users.includes(me())), false);
      }
      case 'toggle-reaction': {
        const pressed = btn.getAttribute('aria-pressed') === 'true';
        return applyMessage(await client.react(c.id, seq, btn.dataset.emoji, !pressed), false);
      }
      case 'delete':
        if (!confirm('Delete this message for everyone?')) return;
        return applyMessage(await client.deleteMessage(c.id, seq), false);
      case 'report':
        return openReport(c, m);
      case 'retry':
        return client.retry(li.dataset.cmid);
      case 'discard':
        return client.discard(li.dataset.cmid);
    }
  } catch (e) {
    toast(`That did not work: ${e.message}`);
  }
}

function onMessagesKey(ev) {
  const items = [...$('message-list').querySelectorAll('.msg')];
  if (!items.length) return;
  const current = ev.target.closest('.msg');
  const onItem = current === ev.target;
  let i = current ? items.indexOf(current) : items.length;
  if (ev.key === 'Escape' && current?.querySelector('.react-picker')) {
    toggleReactPicker(current);
    ev.preventDefault();
    return;
  }
  if (!onItem && ev.target !== $('messages')) return; // keys inside a button keep their meaning
  if (ev.key === 'ArrowUp') i = Math.max(0, i - 1);
  else if (ev.key === 'ArrowDown') i = Math.min(items.length - 1, current ? i + 1 : items.length - 1);
  else if (ev.key === 'Home') i = 0;
  else if (ev.key === 'End') i = items.length - 1;
  else return;
  ev.preventDefault();
  items[i].focus();
  items[i].scrollIntoView({ block: 'nearest' });
}

// ---- dialogs --------------------------------------------------------------------------------------------

function openDialog(id) {
  const d = $(id);
  d.querySelectorAll('.error').forEach((e) => (e.textContent = ''));
  d.showModal();
  return d;
}

function wireDialog(d) {
  d.querySelectorAll('.cancel').forEach((b) => b.addEventListener('click', () => d.close()));
}

/** The message being reported while the report dialog is open. */
let reporting = null;

function openReport(c, m) {
  if (!m) return;
  reporting = { conversationId: c.id, seq: m.seq };
  $('report-quote').textContent = `${name(m.sender)}: ${snippet(m, 140)}`;
  $('report-reason').value = 'spam';
  $('report-comment').value = '';
  openDialog('dlg-report');
}

async function sendReport(ev) {
  ev.preventDefault();
  const d = $('dlg-report');
  if (!reporting) return d.close();
  try {
    await client.reportMessage(reporting.conversationId, reporting.seq, $('report-reason').value, $('report-comment').value.trim());
    reporting = null;
    d.close();
    toast('Reported. The server’s admins will look at it.');
  } catch (e) {
    d.querySelector('.error').textContent = e.code === 'rate_limited' ? 'You have sent many reports. Try again in a minute.' : e.message;
  }
}

async function newChat(ev) {
  ev.preventDefault();
  const d = $('dlg-chat');
  const err = d.querySelector('.error');
  const username = $('chat-username').value.trim();
  if (!username) return void (err.textContent = 'Enter a username.');
  try {
    const u = await client.findUser(username);
    if (u.id === me()) return void (err.textContent = 'That is you. Choose someone else.');
    const details = await client.createDirect(u.id);
    const c = S.convs.get(details.conversation.id) ?? fromDetails(details);
    S.convs.set(c.id, c);
    d.close();
    $('chat-username').value = '';
    refreshPresence([u.id]);
    openConversation(c.id);
  } catch (e) {
    err.textContent = e.code === 'not_found' ? `There is no user named “${username}”.` : e.message;
  }
}

async function resolveUsernames(text) {
  const names = [...new Set(text.split(/[\s,]+/).map((s) => s.trim().replace(/^@/, '')).filter(Boolean))];
  const users = [];
  for (const n of names) {
    try {
      users.push(await client.findUser(n));
    } catch (e) {
      throw new Error(e.code === 'not_found' ? `There is no user named “${n}”.` : e.message);
    }
  }
  return users;
}

async function newGroup(ev) {
  ev.preventDefault();
  const d = $('dlg-group');
  const err = d.querySelector('.error');
  const title = $('group-title').value.trim();
  if (!title) return void (err.textContent = 'Enter a group name.');
  try {
    const users = await resolveUsernames($('group-members').value);
    const details = await client.createGroup(title, users.map((u) => u.id));
    const c = fromDetails(details);
    S.convs.set(c.id, c);
    d.close();
    $('group-title').value = '';
    $('group-members').value = '';
    openConversation(c.id);
  } catch (e) {
    err.textContent = e.message;
  }
}

function renderMembers() {
  const c = S.convs.get(S.open);
  if (!c) return;
  const ul = $('member-list');
  const myRank = ROLE_RANK[c.role] ?? 0;
  ul.replaceChildren(
    ...(c.members ?? []).map((m) =>
      el(
        'li',
        {},
        memberDot(m.user_id),
        el('span', { class: 'member-name', text: m.user_id === me() ? `${client.user.username} (you)` : name(m.user_id) }),
        el('span', { class: 'role', text: m.role }),
        c.kind === 'group' && m.user_id !== me() && myRank > ROLE_RANK[m.role]
          ? el('button', {
              type: 'button',
              class: 'small danger',
              'aria-label': `Remove ${name(m.user_id)}`,
              text: 'Remove',
              onclick: () => memberChange(() => client.removeMember(c.id, m.user_id)),
            })
          : null,
      ),
    ),
  );
  $('form-add-member').hidden = c.kind !== 'group' || myRank < 1 || c.left;
  $('leave-group').hidden = c.kind !== 'group' || c.left;
}

/** A member's presence dot: live for contacts (direct peers, groups up to 100), else as last asked for. */
function memberDot(userId) {
  const status = userId === me() ? 'online' : presenceOf(userId);
  return el('span', { class: `dot ${status}`, role: 'img', 'aria-label': status, title: status });
}

/**
 * Members of a group bigger than the server's presence fan-out are not told of each other's changes (see the
 * protocol's presence rules): the dialog asks for the presence of the members it shows, at most the first 500.
 */
function refreshMemberPresence(c) {
  const shown = (c.members ?? []).map((m) => m.user_id).filter((u) => u !== me()).slice(0, 500);
  return refreshPresence(shown);
}

async function memberChange(fn) {
  const c = S.convs.get(S.open);
  const err = $('dlg-members').querySelector('.error');
  err.textContent = '';
  try {
    await fn();
    await refreshDetails(c);
    renderMembers();
  } catch (e) {
    err.textContent = e.message;
  }
}

// ---- screens -------------------------------------------------------------------------------------------

function showAuth() {
  $('app-view').hidden = true;
  $('auth-view').hidden = false;
  S.convs.clear();
  S.open = null;
  S.presence.clear();
  for (const t of S.typing.values()) for (const timer of t.values()) clearTimeout(timer);
  S.typing.clear();
  for (const u of S.uploads.values()) u.controller.abort();
  S.uploads.clear();
  renderUploads();
  setMode(null);
  document.body.classList.remove('chat-open');
  $('conv-list').replaceChildren();
  $('message-list').replaceChildren();
  $('auth-username').focus();
}

function showApp() {
  $('auth-view').hidden = true;
  $('app-view').hidden = false;
  $('me-name').textContent = client.user.username;
  S.receipts = client.loadUserData('receipts', {}) ?? {};
  renderList();
  if (!S.open) {
    $('chat-pane').hidden = true;
    $('chat-empty').hidden = false;
  }
  $('new-chat').focus();
  client.connect();
}

async function onAuth(ev) {
  ev.preventDefault();
  const action = ev.submitter?.value ?? 'login';
  const username = $('auth-username').value.trim();
  const password = $('auth-password').value;
  const err = $('auth-error');
  err.textContent = '';
  const buttons = $('auth-form').querySelectorAll('button');
  buttons.forEach((b) => (b.disabled = true));
  try {
    if (action === 'register') await client.register(username, password, 'Web browser');
    else await client.login(username, password, 'Web browser');
    $('auth-password').value = '';
  } catch (e) {
    err.textContent = e.status === 401 ? 'Wrong username or password.' : e.message;
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

// ---- wiring --------------------------------------------------------------------------------------------

function init() {
  client.on('event', applyEvent);
  client.on('typing', onTyping);
  client.on('presence', onPresence);
  client.on('status', onStatus);
  client.on('outbox', () => {
    const c = S.convs.get(S.open);
    if (c) renderPending(c);
  });
  client.on('ack', ({ entry, ack }) => {
    if (ack && !S.convs.get(entry.conversation_id)?.msgs?.has(ack.seq)) {
      // The ack came before the message's event: show it as stored now; the event replaces it later.
      applyMessage(
        {
          conversation_id: entry.conversation_id,
          seq: ack.seq,
          message_id: ack.message_id,
          sender: me(),
          sender_device: client.session.device_id,
          client_msg_id: entry.client_msg_id,
          body: entry.body,
          ...(entry.reply_to ? { reply_to: entry.reply_to } : {}),
          ...(entry.attachment_info?.length ? { attachments: entry.attachment_info } : {}),
          sent_at: ack.sent_at,
          deleted: false,
        },
        true,
      );
    }
  });
  client.on('session', (s) => {
    if (!s) showAuth();
    else if ($('app-view').hidden) showApp();
  });
  client.on('error', (f) => {
    if (f.code !== 'rate_limited') console.warn('herald:', f.code, f.message);
  });

  $('auth-form').addEventListener('submit', onAuth);
  $('logout').addEventListener('click', async () => {
    client.saveUserData('receipts', null);
    await client.logout();
  });
  $('conn-retry').addEventListener('click', () => client.reconnectNow());
  // The skip link goes to the message box when a conversation is open, else to the conversation list.
  document.querySelector('.skip-link').addEventListener('click', (ev) => {
    ev.preventDefault();
    const input = $('composer-input');
    if (!$('chat-pane').hidden && !input.disabled) input.focus();
    else ($('conv-list').querySelector('.conv') ?? $('new-chat')).focus();
  });
  $('new-chat').addEventListener('click', () => openDialog('dlg-chat'));
  $('new-group').addEventListener('click', () => openDialog('dlg-group'));
  $('form-chat').addEventListener('submit', newChat);
  $('form-group').addEventListener('submit', newGroup);
  $('form-report').addEventListener('submit', sendReport);
  $('block-btn').addEventListener('click', toggleBlock);
  $('members-btn').addEventListener('click', () => {
    const c = S.convs.get(S.open);
    openDialog('dlg-members');
    renderMembers();
    if (c) refreshDetails(c).then(() => refreshMemberPresence(c)).then(renderMembers);
  });
  $('form-add-member').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const c = S.convs.get(S.open);
    await memberChange(async () => {
      const users = await resolveUsernames($('add-member-name').value);
      for (const u of users) await client.addMember(c.id, u.id);
      $('add-member-name').value = '';
    });
  });
  $('leave-group').addEventListener('click', async () => {
    const c = S.convs.get(S.open);
    if (!c || !confirm(`Leave “${convTitle(c)}”?`)) return;
    try {
      await client.removeMember(c.id, me());
      c.left = true;
      $('dlg-members').close();
      renderHeader(c);
      rerenderMessages(c);
      renderList();
    } catch (e) {
      $('dlg-members').querySelector('.error').textContent = e.message;
    }
  });
  for (const id of ['dlg-chat', 'dlg-group', 'dlg-members', 'dlg-report']) wireDialog($(id));

  $('back').addEventListener('click', () => {
    const id = S.open;
    closeConversation();
    $('conv-list').querySelector(`.conv[data-id="${id}"]`)?.focus();
  });
  $('jump').addEventListener('click', () => {
    scrollToBottom();
    checkRead();
  });

  const box = $('messages');
  box.addEventListener('scroll', () => {
    const c = S.convs.get(S.open);
    if (c && box.scrollTop < 150 && !c.complete && !c.loading && c.lowest != null) loadOlder(c).catch((e) => toast(e.message));
    checkRead();
  });
  box.addEventListener('click', onMessageAction);
  box.addEventListener('keydown', onMessagesKey);

  const input = $('composer-input');
  $('composer').addEventListener('submit', (ev) => {
    ev.preventDefault();
    submitComposer();
  });
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      submitComposer();
    } else if (ev.key === 'Escape' && S.mode) {
      ev.preventDefault();
      if (S.mode.kind === 'edit') input.value = '';
      setMode(null);
    }
  });
  input.addEventListener('input', () => {
    autosize();
    sendTyping(input.value.trim() !== '');
  });
  input.addEventListener('blur', () => sendTyping(false));
  // Attachments: the button opens the (hidden) file input; files can also be dropped on the conversation or pasted.
  const picker = $('attach-input');
  $('attach').addEventListener('click', () => picker.click());
  picker.addEventListener('change', () => {
    for (const file of picker.files) startUpload(file);
    picker.value = ''; // the same file can be picked again
  });
  $('composer-uploads').addEventListener('click', onUploadAction);
  input.addEventListener('paste', (ev) => {
    const files = [...(ev.clipboardData?.files ?? [])];
    if (!files.length) return;
    ev.preventDefault();
    files.forEach((f) => startUpload(f));
  });
  const pane = $('chat-pane');
  pane.addEventListener('dragover', (ev) => {
    if (ev.dataTransfer?.types.includes('Files') && !$('attach').disabled) ev.preventDefault();
  });
  pane.addEventListener('drop', (ev) => {
    if (!ev.dataTransfer?.files.length || $('attach').disabled) return;
    ev.preventDefault();
    for (const file of ev.dataTransfer.files) startUpload(file);
  });
  $('composer-cancel').addEventListener('click', () => {
    if (S.mode?.kind === 'edit') input.value = '';
    setMode(null);
  });

  // The browser knows about the network before the socket does.
  addEventListener('offline', () => client.interrupt('the browser went offline'));
  addEventListener('online', () => client.reconnectNow());
  document.addEventListener('visibilitychange', () => {
    if (!client.session) return;
    if (document.visibilityState === 'visible') {
      client.setPresence('online');
      client.reconnectNow();
      checkRead();
    } else {
      client.setPresence('away');
    }
  });

  if (client.session) showApp();
  else showAuth();
}

init();
