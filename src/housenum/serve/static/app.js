// The page: pick, drop or photograph an image, send it to /v1/numbers or /v1/digits, show the answer.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { mode: "numbers", readerAvailable: true, busy: false, pending: null };

const MODES = {
  numbers: { endpoint: "/v1/numbers", label: "House number", hint: "Drop a street photo here, or" },
  digits: { endpoint: "/v1/digits?top_k=3", label: "Digit", hint: "Drop a close crop of one digit here, or" },
};

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function selectMode(mode, focus = false) {
  state.mode = mode;
  state.pending = null;        // a pick queued in the other tab was meant for that tab's model
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const selected = tab.dataset.mode === mode;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    if (selected) {
      $("panel").setAttribute("aria-labelledby", tab.id);
      if (focus) tab.focus();
    }
  }
  $("drop-hint").textContent = MODES[mode].hint;
  $("unavailable").hidden = state.readerAvailable;
  $("result").hidden = true;
  setStatus("");
}

function setupTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => selectMode(tab.dataset.mode));
    tab.addEventListener("keydown", (e) => {
      // the WAI-ARIA tabs pattern: arrows step round, Home and End go to the first and the last tab
      const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
      if (to !== undefined) {
        e.preventDefault();
        selectMode(tabs[(to + tabs.length) % tabs.length].dataset.mode, true);
      }
    });
  });
}

async function loadInfo() {
  try {
    const models = await (await fetch("/v1/models")).json();
    state.readerAvailable = Boolean(models.numbers && models.numbers.available);
    if (!state.readerAvailable) {
      $("unavailable").textContent = "The house-number reader is unavailable on this server: " +
        `${models.numbers.reason}. You can still read single digits.`;
      selectMode("digits");
    }
  } catch (err) {
    setStatus("Cannot reach the server: " + err.message, true);
  }
  try {
    const { examples } = await (await fetch("/v1/examples")).json();
    const list = $("examples");
    for (const ex of examples) {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.setAttribute("aria-label", `Read example photo ${ex.name}`);
      const img = document.createElement("img");
      img.src = ex.url;
      img.alt = "";
      button.append(img);
      button.addEventListener("click", async () => {
        try {
          const response = await fetch(ex.url);
          if (!response.ok) {   // removed from the server since the page loaded: its 404 is no photo
            setStatus(`The example ${ex.name} is no longer on the server.`, true);
            return;
          }
          const blob = await response.blob();
          read(new File([blob], ex.name, { type: blob.type || "image/png" }));
        } catch (err) {
          setStatus(`The example ${ex.name} could not be fetched: ${err.message}`, true);
        }
      });
      item.append(button);
      list.append(item);
    }
    $("examples-section").hidden = examples.length === 0;
  } catch (err) {
    $("examples-section").hidden = true;
  }
}

function drawPhoto(bitmap, boxes) {
  const canvas = $("photo");
  const maxWidth = Math.min(480, canvas.parentElement.clientWidth || 480);
  // Small SVHN photos are scaled up so the boxes stay visible; large ones are scaled down.
  const scale = Math.min(maxWidth / bitmap.width, 320 / bitmap.height, 4);
  const width = Math.round(bitmap.width * scale), height = Math.round(bitmap.height * scale);
  // The backing store has one pixel per screen pixel, so boxes and labels stay sharp on HiDPI screens.
  const dpr = window.devicePixelRatio || 1;
  canvas.style.width = width + "px";  // the height follows from the aspect ratio
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  const ctx = canvas.getContext("2d");
  ctx.scale(dpr, dpr);
  ctx.imageSmoothingEnabled = scale < 1;
  ctx.drawImage(bitmap, 0, 0, width, height);
  ctx.lineWidth = 2;
  ctx.font = "bold 14px system-ui, sans-serif";
  for (const [left, top, width, height, digit] of boxes) {
    ctx.strokeStyle = "#ff3b30";
    ctx.strokeRect(left * scale, top * scale, width * scale, height * scale);
    const label = String(digit);
    const y = Math.max(top * scale - 18, 0);
    ctx.fillStyle = "#ff3b30";
    ctx.fillRect(left * scale, y, ctx.measureText(label).width + 8, 18);
    ctx.fillStyle = "#ffffff";
    ctx.fillText(label, left * scale + 4, y + 14);
  }
}

function percent(p) {
  return (100 * p).toFixed(1) + "%";
}

function showAnswer(result, roundTripMs, mode) {
  const answer = $("answer");
  $("answer-label").textContent = MODES[mode].label;
  const value = mode === "numbers" ? result.number : String(result.digit);
  answer.textContent = value ?? "No number found";
  answer.classList.toggle("none", value == null);
  $("confidence").textContent = percent(result.confidence);
  $("time").textContent = `${result.ms.toFixed(1)} ms on the server, ${roundTripMs.toFixed(0)} ms in all`;
  $("model").textContent = result.model;
  const candidates = $("candidates");
  candidates.replaceChildren();
  candidates.hidden = mode !== "digits";
  for (const c of result.top_k || []) {
    const li = document.createElement("li");
    li.textContent = `${c.digit}: ${percent(c.probability)}`;
    candidates.append(li);
  }
}

const NOTHING_TO_READ = {
  dropped: "Nothing to read: drop an image file (text and links cannot be read).",
  pasted: "Nothing to read: paste an image (text cannot be read).",
};

// What a drop or paste brought: its first file, with a word on what was left, or a message for none.
function readGiven(files, how) {
  const list = [...(files || [])];
  if (!list.length) {
    setStatus(NOTHING_TO_READ[how], true);
    return;
  }
  const note = list.length > 1 ? ` (the first of ${list.length} ${how}: the page reads one image at a time)` : "";
  read(list[0], note);
}

async function read(file, note = "") {
  if (!file) return;
  if (state.busy) {            // read it when the one in flight is done (the latest pick wins)
    state.pending = { file, note };
    setStatus(`Reading another image; ${file.name} is next.`);
    return;
  }
  const mode = state.mode;     // the answer belongs to the mode it was asked in
  if (mode === "numbers" && !state.readerAvailable) {
    setStatus("The house-number reader is unavailable; switch to Single digit.", true);
    return;
  }
  state.busy = true;
  setStatus(`Reading ${file.name}…`);
  const form = new FormData();
  form.append("file", file, file.name);
  const started = performance.now();
  try {
    const response = await fetch(MODES[mode].endpoint, { method: "POST", body: form });
    // a proxy in front of the server may answer an error with an HTML page rather than our JSON
    const body = await response.json().catch(() => ({}));
    const roundTrip = performance.now() - started;
    if (mode !== state.mode) return;   // the tab changed while it was read: that answer is not asked for now
    if (!response.ok) {
      $("result").hidden = true;
      setStatus(body.error ? body.error.message : `The server answered ${response.status}.`, true);
      return;
    }
    let bitmap;
    try {
      bitmap = await createImageBitmap(file);
    } catch (err) {
      bitmap = null; // the server read a format this browser cannot draw; show the answer only
    }
    $("result").hidden = false;
    $("photo").hidden = !bitmap;
    if (bitmap) drawPhoto(bitmap, body.boxes || []);
    showAnswer(body, roundTrip, mode);
    setStatus(`Read ${file.name}${note}.`);
  } catch (err) {
    setStatus("The request failed: " + err.message, true);
  } finally {
    state.busy = false;
    const next = state.pending;
    state.pending = null;
    if (next) read(next.file, next.note);
  }
}

function isTextField(node) {
  return node instanceof Element && (node.isContentEditable || node.matches("textarea, input:not([type=file])"));
}

function setupInputs() {
  for (const id of ["file", "camera"]) {
    $(id).addEventListener("change", (e) => {
      read(e.target.files[0]);
      e.target.value = "";
    });
  }
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) drop.addEventListener(name, () => drop.classList.add("over"));
  for (const name of ["dragleave", "drop"]) drop.addEventListener(name, () => drop.classList.remove("over"));
  // The whole page takes a drop, the zone only shows where: a file let go beside it would otherwise
  // replace the page with the file. A drop on the zone bubbles up to here, so it is read once.
  for (const name of ["dragenter", "dragover"]) document.addEventListener(name, (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    readGiven(e.dataTransfer?.files, "dropped");
  });
  document.addEventListener("paste", (e) => {
    const files = e.clipboardData?.files;
    if (!files?.length && isTextField(e.target)) return;   // text pasted into a field is for the field
    readGiven(files, "pasted");
  });
}

setupTabs();
setupInputs();
loadInfo();
