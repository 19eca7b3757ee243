// Acknowledge and resolve from a finding's page (/findings/{id}), through
// the same authenticated API as every other client:
// POST /v1/findings/{id}/acknowledge|resolve with `Authorization: Bearer`.
// The token is asked for once and kept in this tab's sessionStorage only,
// and only after the API accepted it. Everything shown is set as text,
// never parsed as markup.
'use strict';

(function () {
  const KEY = 'image-auditor.triage-token';
  const section = document.getElementById('triage');
  const form = document.getElementById('act');
  if (!section || !form) {
    return;
  }
  const id = section.dataset.finding;
  const tokenInput = document.getElementById('token');
  const tokenRow = document.getElementById('token-row');
  const tokenKept = document.getElementById('token-kept');
  const note = document.getElementById('note');
  const result = document.getElementById('result');
  const buttons = Array.from(form.querySelectorAll('button[data-action]'));
  // The changes each state allows (the server's rules; the API has the
  // last word, and its refusal is shown).
  const allowed = {
    open: ['acknowledge', 'resolve'],
    acknowledged: ['resolve'],
    resolved: [],
  };

  function kept() {
    return sessionStorage.getItem(KEY);
  }

  function showToken() {
    const has = kept() !== null;
    tokenRow.hidden = has;
    tokenKept.hidden = !has;
  }

  function show(message, ok) {
    result.textContent = message;
    result.className = ok ? 'ok' : 'error';
  }

  function utc(ms) {
    return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
  }

  function showTriage(triage) {
    section.dataset.state = triage.state;
    document.getElementById('triage-state').textContent = triage.state;
    document.getElementById('triage-by').textContent = triage.by || '—';
    document.getElementById('triage-at').textContent =
      triage.at_ms ? utc(triage.at_ms) : '—';
    document.getElementById('triage-note').textContent = triage.note || '—';
    offer(triage.state);
  }

  function offer(state) {
    for (const b of buttons) {
      b.disabled = !(allowed[state] || []).includes(b.dataset.action);
    }
  }

  async function act(action) {
    const token = kept() || tokenInput.value.trim();
    if (!token) {
      show('Type your triage token first.', false);
      tokenInput.focus();
      return;
    }
    for (const b of buttons) {
      b.disabled = true;
    }
    show('Sending…', true);
    let response;
    let body = null;
    try {
      response = await fetch('/v1/findings/' + encodeURIComponent(id) + '/' + action, {
        method: 'POST',
        headers: {
          Authorization: 'Bearer ' + token,
          'Content-Type': 'application/json',
        },
        body: JSON.stringify({ note: note.value }),
        credentials: 'omit',
        cache: 'no-store',
      });
      body = await response.json().catch(() => null);
    } catch (e) {
      show('The service did not answer: ' + e, false);
      offer(section.dataset.state);
      return;
    }
    if (response.ok && body && body.finding) {
      sessionStorage.setItem(KEY, token);
      tokenInput.value = '';
      showToken();
      showTriage(body.finding.triage);
      const t = body.finding.triage;
      show(
        body.changed
          ? t.state + ' by ' + t.by
          : 'Already ' + t.state + ' by ' + t.by + '; nothing changed.',
        true,
      );
      note.value = '';
      return;
    }
    if (response.status === 401 || response.status === 403) {
      // A token the API refuses is not kept: the next try asks again.
      sessionStorage.removeItem(KEY);
      showToken();
    }
    const why = body && body.error ? body.error : response.statusText;
    show(response.status + ': ' + why, false);
    offer(section.dataset.state);
  }

  for (const b of buttons) {
    b.addEventListener('click', () => act(b.dataset.action));
  }
  document.getElementById('forget').addEventListener('click', () => {
    sessionStorage.removeItem(KEY);
    showToken();
    show('Token forgotten.', true);
  });
  form.addEventListener('submit', (e) => e.preventDefault());
  form.hidden = false;
  showToken();
})();
