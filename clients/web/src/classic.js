// The script-tag form: <script src=".../nps.js" data-key="nps_pk_..." data-survey="..." async>, then
// NPS.identify({respondentId, respondentHash, attributes}). Calls made before it loaded wait in the
// stub's queue (window.NPS = window.NPS || {q: [], identify: function () { NPS.q.push(arguments) }}).
(function install() {
  const script = document.currentScript;
  const data = (script && script.dataset) || {};
  const defaults = {
    key: data.key,
    survey: data.survey,
    api: data.api || (script && script.src ? new URL(script.src).origin : ""),
  };
  const queued = (window.NPS && window.NPS.q) || [];
  const NPS = {
    VERSION,
    prompt: (options) => prompt(Object.assign({}, defaults, options)),
    identify: (person) => NPS.prompt(person || {}),
  };
  window.NPS = NPS;
  for (const args of queued) NPS.identify(args[0]);
  if (data.anonymous !== undefined) NPS.identify({}); // an anonymous key: nobody to identify
})();
