// The message log of the open conversation: messages and pending sends in seq order, with their ticks and
// reactions; runs of one sender; older pages of history; the read position; the reaction picker. (What its
// buttons and keys do is in message-actions.js.)
import { $, el } from './dom.js';
import { ROLE_RANK, S, client, me, scheduleRender } from './state.js';
import { name, snippet, systemText } from './labels.js';
import { attachmentsEl } from './attachments.js';
import { learnThreads, threadLabel, threadUnread } from './threads.js';
import { contentEls, metaEl } from './message-parts.js';

const REACTIONS = ['👍', '❤️', '😂', '😮', '😢', '🙏'];

/** Consecutive messages of one sender within 5 minutes form a run: only the first shows the name. */
export function markRuns() {
  let prev = null;
  for (const li of $('message-list').children) {
    const run = prev && li.dataset.sender && prev.dataset.sender === li.dataset.sender && li.dataset.time - prev.dataset.time < 300_000;
    li.classList.toggle('cont', Boolean(run));
    prev = li.classList.contains('system') ? null : li;
  }
}

// ---- ticks ----------------------------------------------------------------------------------------------

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

export function renderTicks(c) {
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

// ---- messages -------------------------------------------------------------------------------------------

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
    metaEl(m),
    m.reply_to && !m.deleted
      ? el(
          'button',
          { type: 'button', class: 'reply-ref', dataset: { goto: m.reply_to }, tabindex: '-1' },
          el('span', { class: 'visually-hidden', text: 'In reply to ' }),
          reply ? `${name(reply.sender)}: ${reply.deleted ? 'deleted message' : snippet(reply, 100)}` : `message #${m.reply_to}`,
        )
      : null,
    contentEls(m),
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
    m.thread?.replies
      ? el('button', {
          type: 'button',
          class: `small thread-link${threadUnread(c, m.seq) ? ' unread' : ''}`,
          dataset: { act: 'open-thread' },
          text: threadLabel(c, m),
        })
      : null,
    mine && !m.deleted ? tickEl(tickState(c, m.seq)) : null,
    m.deleted || c.left
      ? null
      : el(
          'div',
          { class: 'actions', role: 'group', 'aria-label': 'Message actions' },
          el('button', { type: 'button', class: 'small', dataset: { act: 'reply' }, text: 'Reply' }),
          el('button', { type: 'button', class: 'small', dataset: { act: 'open-thread' }, text: 'Thread' }),
          el('button', { type: 'button', class: 'small', dataset: { act: 'react' }, 'aria-expanded': 'false', text: 'React' }),
          mine ? el('button', { type: 'button', class: 'small', dataset: { act: 'edit' }, text: 'Edit' }) : null,
          canDelete(c, m) ? el('button', { type: 'button', class: 'small danger', dataset: { act: 'delete' }, text: 'Delete' }) : null,
          mine ? null : el('button', { type: 'button', class: 'small', dataset: { act: 'report' }, text: 'Report' }),
        ),
  );
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

/** Inserts or replaces the element of message `m` in seq order (pending sends stay last). Thread replies are shown
 * in the thread's panel (threads.js), not here. */
export function renderMessage(c, m) {
  if (m.thread_root) return;
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

export function rerenderMessages(c) {
  if (!c.msgs) return;
  const list = $('message-list');
  const focusedSeq = document.activeElement?.closest?.('.msg')?.dataset.seq;
  const seqs = [...c.msgs.keys()].filter((s) => !c.msgs.get(s).thread_root).sort((a, b) => a - b);
  list.replaceChildren(...seqs.map((s) => messageEl(c, c.msgs.get(s))));
  renderPending(c);
  renderTicks(c);
  if (focusedSeq) list.querySelector(`.msg[data-seq="${focusedSeq}"]`)?.focus();
}

export function renderPending(c) {
  const list = $('message-list');
  for (const li of list.querySelectorAll('.msg.pending')) li.remove();
  const atBottom = nearBottom();
  for (const e of client.outbox) if (e.conversation_id === c.id && !e.thread_root) list.append(pendingEl(e));
  if (atBottom) scrollToBottom();
  scheduleRender({});
}

export function nearBottom() {
  const m = $('messages');
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

export function scrollToBottom() {
  const m = $('messages');
  m.scrollTop = m.scrollHeight;
  $('jump').hidden = true;
}

// ---- history --------------------------------------------------------------------------------------------

export async function loadOlder(c, first = false) {
  if (c.loading || c.complete) return;
  c.loading = true;
  const box = $('messages');
  renderHistoryStatus(c);
  try {
    const page = await client.history(c.id, { from: c.lowest == null ? undefined : c.next, dir: 'backward', limit: 50 });
    if (S.open !== c.id || !c.msgs) return;
    const added = [];
    for (const m of page.messages) {
      if (!m.thread_root) c.lastBy.set(m.sender, Math.max(c.lastBy.get(m.sender) ?? 0, m.seq));
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
      if (m.thread_root) continue;
      if (m.seq < lowestExisting) frag.append(messageEl(c, m));
      else renderMessage(c, m);
    }
    learnThreads(c, added);
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
export function checkRead() {
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

// ---- the reaction picker --------------------------------------------------------------------------------

export function toggleReactPicker(li, focus = true) {
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
