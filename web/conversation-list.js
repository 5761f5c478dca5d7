// The conversation list in the sidebar, newest activity first (and the unread total in the page's title).
import { $, el } from './dom.js';
import { formatTime } from './format.js';
import { S, hooks } from './state.js';
import { convTitle, preview } from './labels.js';
import { presenceOf } from './presence.js';
import { typingNames } from './typing.js';
import { unread } from './conversations.js';

export function renderList() {
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
          { type: 'button', class: 'conv', dataset: { id: c.id }, 'aria-current': c.id === S.open ? 'true' : 'false', onclick: () => hooks.openConversation(c.id) },
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
