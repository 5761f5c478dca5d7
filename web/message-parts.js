// The parts a message shows wherever it is shown (the conversation's log, a thread's panel): its header (sender,
// time, "(edited)") and its content (attachments, then the text, or "This message was deleted").
import { el } from './dom.js';
import { formatTime } from './format.js';
import { name } from './labels.js';
import { attachmentsEl } from './attachments.js';

export function metaEl(m) {
  return el(
    'div',
    { class: 'meta' },
    el('span', { class: 'sender', text: name(m.sender) }),
    el('time', { datetime: new Date(m.sent_at).toISOString(), text: formatTime(m.sent_at) }),
    m.edited_at && !m.deleted ? el('span', { class: 'edited', text: '(edited)' }) : null,
  );
}

/** Attachments and text; a message with attachments and no text shows no empty paragraph. */
export function contentEls(m) {
  return [
    m.deleted ? null : attachmentsEl(m.attachments),
    m.deleted || m.body || !m.attachments?.length ? el('p', { class: 'body', text: m.deleted ? 'This message was deleted' : m.body }) : null,
  ];
}
