// The connection line at the top of the app: the socket's state, and the countdown to the next attempt while it
// is down.
import { $ } from './dom.js';
import { S, scheduleRender } from './state.js';
import { refreshPresence } from './presence.js';
import { renderPending } from './message-list.js';

let countdown;
export function onStatus(s) {
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
