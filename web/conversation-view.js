// The open conversation: opening and closing it, its header (with the Block and Report buttons), and the client's reload
// hook, which rebuilds the list and opens the conversation on screen again.
import { $, toast } from './dom.js';
import { formatTime } from './format.js';
import { S, client } from './state.js';
import { convTitle, name, wantProfile } from './labels.js';
import { presenceOf } from './presence.js';
import { renderTypingLine, sendTyping } from './typing.js';
import { checkRead, loadOlder, renderPending, scrollToBottom } from './message-list.js';
import { fromSummary, refreshDetails, unread } from './conversations.js';
import { renderList } from './conversation-list.js';
import { autosize, setMode } from './composer.js';
import { renderUploads } from './uploads.js';
import { closeThread } from './threads.js';

/** The client's reload hook: the conversation list (and the open conversation) from REST. */
export async function reload() {
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

export function renderHeader(c) {
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
  $('report-user-btn').hidden = !(c.kind === 'direct' && c.peer);
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

export async function toggleBlock() {
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

export async function openConversation(id, { focus = true } = {}) {
  const c = S.convs.get(id);
  if (!c) return;
  const switching = S.open !== id;
  if (switching) {
    closeThread();
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

export function closeConversation() {
  closeThread();
  sendTyping(false);
  S.open = null;
  document.body.classList.remove('chat-open');
  $('chat-pane').hidden = true;
  $('chat-empty').hidden = false;
  renderList();
}
