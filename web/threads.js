// Threads: the side panel that shows a root message and its replies, the box to reply in the thread, and each
// thread's own unread count (the conversation's leaves thread replies out; see api.md, "Threads"). Replies arrive
// as any message does (conversations.js hands them here); the panel marks them read while it shows them.
import { $, el } from './dom.js';
import { S, client, me, scheduleRender } from './state.js';
import { contentEls, metaEl } from './message-parts.js';

/** Replies loaded when a thread opens, at most (in pages of the server's largest, 200). */
const MAX_REPLIES = 2000;

/** The thread on screen: `{conv, root, replies: Map(seq -> message), read}`, or null. */
let open = null;

export const threadOpen = (conversationId, root) => open?.conv === conversationId && open?.root === root;

/** The replies of others that this user has not read in the thread of `root` (0 when unknown). */
export const threadUnread = (c, root) => c.threadUnread?.get(root) ?? 0;

function replyEl(m) {
  return el(
    'li',
    { class: `msg${m.sender === me() ? ' mine' : ''}${m.deleted ? ' deleted' : ''}`, tabindex: '-1', dataset: { seq: m.seq, sender: m.sender } },
    metaEl(m),
    contentEls(m),
  );
}

function pendingEl(e) {
  const failed = e.state === 'failed';
  return el(
    'li',
    { class: `msg mine pending${failed ? ' failed' : ''}`, dataset: { cmid: e.client_msg_id } },
    el('div', { class: 'meta' }, el('span', { class: 'sender', text: 'You' })),
    el('p', { class: 'body', text: e.body }),
    failed
      ? el(
          'div',
          { class: 'send-failed' },
          el('span', { class: 'error', text: `Not sent: ${e.error?.message ?? 'failed'}` }),
          el('button', { type: 'button', class: 'small', dataset: { act: 'retry' }, text: 'Retry' }),
          el('button', { type: 'button', class: 'small', dataset: { act: 'discard' }, text: 'Discard' }),
        )
      : el('span', { class: 'sending', text: client.online ? 'Sending…' : 'Waiting for the connection…' }),
  );
}

function renderRoot(c) {
  const root = c.msgs?.get(open.root) ?? open.rootMessage;
  $('thread-root').replaceChildren(root ? replyEl(root) : el('p', { class: 'muted', text: `Message #${open.root}` }));
  const count = root?.thread?.replies ?? open.replies.size;
  $('thread-title').textContent = count === 1 ? 'Thread · 1 reply' : `Thread · ${count} replies`;
}

/** Draws the replies (in seq order) and this device's replies still in the outbox. */
export function renderThread() {
  if (!open) return;
  const c = S.convs.get(open.conv);
  if (!c) return closeThread();
  renderRoot(c);
  const seqs = [...open.replies.keys()].sort((a, b) => a - b);
  const pending = client.outbox.filter((e) => e.conversation_id === open.conv && e.thread_root === open.root);
  $('thread-list').replaceChildren(...seqs.map((s) => replyEl(open.replies.get(s))), ...pending.map(pendingEl));
  $('thread-status').textContent = open.loading ? 'Loading the replies…' : seqs.length || pending.length ? '' : 'No replies yet.';
  const box = $('thread-messages');
  box.scrollTop = box.scrollHeight;
}

/** Marks the thread read up to its newest reply while the panel shows it (and the page is visible). */
function markSeen(c) {
  if (!open || document.visibilityState !== 'visible') return;
  const newest = Math.max(0, ...open.replies.keys());
  if (newest <= open.read) return;
  open.read = newest;
  const { conv, root } = open;
  client.markThreadRead(conv, root, newest).then(
    (t) => {
      c.threadUnread?.set(root, t.unread);
      scheduleRender({ messages: c.id === S.open });
    },
    () => {},
  );
  c.threadUnread?.set(root, 0);
}

export async function openThread(c, root) {
  open = { conv: c.id, root, replies: new Map(), read: 0, loading: true, rootMessage: c.msgs?.get(root) };
  $('thread-pane').hidden = false;
  document.body.classList.add('thread-open');
  $('thread-error').textContent = '';
  renderThread();
  $('thread-input').focus();
  const mine = open;
  try {
    const state = await client.thread(c.id, root);
    if (open !== mine) return;
    open.rootMessage = state.root;
    open.read = state.read;
    let from;
    while (open === mine && open.replies.size < MAX_REPLIES) {
      const page = await client.threadReplies(c.id, root, { from, limit: 200 });
      for (const m of page.messages) open.replies.set(m.seq, m);
      if (page.next == null) break;
      from = page.next;
    }
  } catch (e) {
    if (open === mine) $('thread-status').textContent = `Could not load the thread: ${e.message}`;
    return;
  } finally {
    if (open === mine) open.loading = false;
  }
  if (open !== mine) return;
  renderThread();
  markSeen(c);
}

export function closeThread() {
  const root = open?.root;
  open = null;
  $('thread-pane').hidden = true;
  document.body.classList.remove('thread-open');
  if (root != null) $('message-list').querySelector(`.msg[data-seq="${root}"]`)?.focus();
}

/**
 * A reply that arrived (new or changed): shown if its thread is open, else counted unread when someone else sent
 * it. The root's summary is bumped by conversations.js.
 */
export function threadMessage(c, m, isNew) {
  if (threadOpen(c.id, m.thread_root)) {
    open.replies.set(m.seq, m);
    renderThread();
    markSeen(c);
  } else if (isNew && m.sender !== me()) {
    c.threadUnread ??= new Map();
    c.threadUnread.set(m.thread_root, threadUnread(c, m.thread_root) + 1);
  }
}

/** Learns the unread counts of the threads among messages just loaded from history (one request per root). */
export function learnThreads(c, messages) {
  for (const m of messages) {
    if (!m.thread?.replies || c.threadUnread?.has(m.seq)) continue;
    c.threadUnread ??= new Map();
    c.threadUnread.set(m.seq, 0);
    client.thread(c.id, m.seq).then(
      (t) => {
        if (threadOpen(c.id, m.seq)) return;
        c.threadUnread.set(m.seq, t.unread);
        if (t.unread && c.id === S.open) scheduleRender({ messages: true });
      },
      () => c.threadUnread.delete(m.seq),
    );
  }
}

export function submitThread() {
  const input = $('thread-input');
  const body = input.value;
  const c = open && S.convs.get(open.conv);
  if (!c || c.left || !body.trim()) return;
  client.send(c.id, body, { threadRoot: open.root });
  input.value = '';
  renderThread();
}

/** A label for a root's "replies" button: the count, and what is unread for this user. */
export function threadLabel(c, m) {
  const n = m.thread.replies;
  const unread = threadUnread(c, m.seq);
  return `${n === 1 ? '1 reply' : `${n} replies`}${unread ? ` · ${unread} new` : ''}`;
}

/** Clicks in the panel: Retry and Discard of a reply that was not sent. */
export function onThreadAction(ev) {
  const btn = ev.target.closest('button[data-act]');
  const cmid = btn?.closest('.msg')?.dataset.cmid;
  if (!cmid) return;
  if (btn.dataset.act === 'retry') client.retry(cmid);
  else if (btn.dataset.act === 'discard') client.discard(cmid);
  renderThread();
}
