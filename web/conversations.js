// The conversations this device knows (S.convs): made from the REST summaries and details, and kept current by
// the events of the feed (messages, edits, receipts), including conversations others start.
import { $ } from './dom.js';
import { S, client, hooks, me, scheduleRender } from './state.js';
import { wantProfile } from './labels.js';
import { refreshPresence } from './presence.js';
import { stopTyping } from './typing.js';
import { renderMessage } from './message-list.js';
import { threadMessage } from './threads.js';

export function fromSummary(s) {
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
    // The conversation's unread count leaves thread replies out. The server's count says how many were among the
    // unread messages when the summary was made (`hiddenUnread`, seqs up to `hiddenUpTo`, which are unknown here);
    // replies that arrive later are counted by seq (`threadSeqs`).
    hiddenUnread: s.unread == null ? 0 : Math.max(0, s.last_seq - s.read - s.unread),
    hiddenUpTo: s.last_seq,
    threadSeqs: new Set(),
    threadUnread: new Map(), // root seq -> replies by others this user has not read in that thread
    members: null,
    left: false,
    msgs: null, // Map(seq -> message) once opened
    lowest: null, // the lowest seq loaded from history
    next: null, // `from` of the next older page
    complete: false,
    lastBy: new Map(), // user id -> highest seq they sent (sending counts as reading)
  };
}

export function fromDetails(d) {
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

/** Messages after the read position, thread replies left out (an estimate while read is among the replies the
 * summary counted but did not name; exact before and after them). */
export function unread(c) {
  let inThreads = c.read < c.hiddenUpTo ? c.hiddenUnread : 0;
  for (const seq of c.threadSeqs) {
    if (seq <= c.read) c.threadSeqs.delete(seq);
    else inThreads += 1;
  }
  return Math.max(0, c.last_seq - c.read - inThreads);
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

export function refreshDetails(c) {
  return client.conversation(c.id).then(
    (d) => {
      c.members = d.members;
      c.title = d.conversation.title;
      c.role = d.members.find((m) => m.user_id === me())?.role ?? c.role;
      for (const m of d.members) wantProfile(m.user_id);
      scheduleRender({ header: true, messages: true });
      if (!$('dlg-members').hidden && $('dlg-members').open) hooks.renderMembers();
      return c;
    },
    (e) => {
      if (e.code === 'not_found') c.left = true;
      scheduleRender({ header: true, list: true });
    },
  );
}

export function applyEvent({ event: ev }) {
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

export function applyMessage(m, isNew) {
  const c = S.convs.get(m.conversation_id) ?? adopt(m.conversation_id);
  c.last_seq = Math.max(c.last_seq, m.seq);
  if (!c.last_message || m.seq >= c.last_message.seq) c.last_message = m;
  if (isNew) c.last_activity_at = Math.max(c.last_activity_at, m.sent_at);
  // Sending in the main timeline counts as reading it; a thread reply says nothing of it (as on the server).
  if (m.thread_root) {
    if (isNew && m.seq > c.hiddenUpTo) c.threadSeqs.add(m.seq);
  } else {
    if (m.sender === me()) c.read = Math.max(c.read, m.seq);
    c.lastBy.set(m.sender, Math.max(c.lastBy.get(m.sender) ?? 0, m.seq));
  }
  if (c.msgs && (c.lowest == null || m.seq >= c.lowest)) {
    c.msgs.set(m.seq, m);
    if (c.id === S.open) renderMessage(c, m);
  }
  if (m.thread_root) {
    // The reply's event is the news of it: the root's summary is bumped here (once, by seq).
    const root = c.msgs?.get(m.thread_root);
    if (isNew && root && m.seq > (root.thread?.last_seq ?? 0)) {
      root.thread = { replies: (root.thread?.replies ?? 0) + 1, last_seq: m.seq, last_reply_at: m.sent_at };
    }
    threadMessage(c, m, isNew);
    if (root && c.id === S.open) renderMessage(c, root);
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
