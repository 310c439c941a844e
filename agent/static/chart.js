// Score timeline on a canvas: M per window (one line per task) over media time; shed windows as grey bands.
"use strict";

(() => {
  const COLORS = ["#1f6fb2", "#c2452d", "#2e8b57", "#8a4fbf", "#b8860b"];
  const PAD = { left: 48, right: 16, top: 12, bottom: 32 };
  const MIN_SPAN_S = 10;

  function taskColors(scores) {
    const colors = new Map();
    for (const message of scores) {
      for (const task of message.scores || []) {
        if (!colors.has(task.task)) colors.set(task.task, COLORS[colors.size % COLORS.length]);
      }
    }
    return colors;
  }

  function yRange(scores) {
    let low = Infinity;
    let high = -Infinity;
    for (const message of scores) {
      for (const task of message.scores || []) {
        low = Math.min(low, task.label_min, task.m);
        high = Math.max(high, task.label_max, task.m);
      }
    }
    return Number.isFinite(low) && high > low ? [low, high] : [-1, 1];
  }

  function draw(canvas, scores) {
    const ctx = canvas.getContext("2d");
    const width = canvas.width;
    const height = canvas.height;
    ctx.clearRect(0, 0, width, height);
    const t0 = scores.length ? Math.min(...scores.map((m) => m.start_s)) : 0;
    const t1 = Math.max(t0 + MIN_SPAN_S, ...scores.map((m) => m.end_s));
    const [y0, y1] = yRange(scores);
    const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (width - PAD.left - PAD.right);
    const y = (v) => height - PAD.bottom - ((v - y0) / (y1 - y0)) * (height - PAD.top - PAD.bottom);

    axes(ctx, { x, y, t0, t1, y0, y1, width, height });
    ctx.fillStyle = "rgba(128, 128, 128, 0.25)";
    for (const message of scores) {
      if (message.shed) ctx.fillRect(x(message.start_s), PAD.top, x(message.end_s) - x(message.start_s), height - PAD.top - PAD.bottom);
    }
    for (const [name, color] of taskColors(scores)) {
      const points = [];
      for (const message of scores) {
        const task = (message.scores || []).find((s) => s.task === name);
        if (task && Number.isFinite(task.m)) points.push([x((message.start_s + message.end_s) / 2), y(task.m)]);
      }
      points.sort((a, b) => a[0] - b[0]);
      ctx.strokeStyle = color;
      ctx.fillStyle = color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      points.forEach(([px, py], i) => (i ? ctx.lineTo(px, py) : ctx.moveTo(px, py)));
      ctx.stroke();
      for (const [px, py] of points) {
        ctx.beginPath();
        ctx.arc(px, py, 3, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
  }

  function axes(ctx, { x, y, t0, t1, y0, y1, width, height }) {
    ctx.strokeStyle = "#999";
    ctx.fillStyle = "#555";
    ctx.lineWidth = 1;
    ctx.font = "11px sans-serif";
    ctx.beginPath();
    ctx.moveTo(PAD.left, PAD.top);
    ctx.lineTo(PAD.left, height - PAD.bottom);
    ctx.lineTo(width - PAD.right, height - PAD.bottom);
    ctx.stroke();
    ctx.textAlign = "right";
    for (const v of [y0, (y0 + y1) / 2, y1]) {
      ctx.fillText(v.toFixed(1), PAD.left - 6, y(v) + 4);
      ctx.strokeStyle = "#e4e4e4";
      ctx.beginPath();
      ctx.moveTo(PAD.left + 1, y(v));
      ctx.lineTo(width - PAD.right, y(v));
      ctx.stroke();
    }
    ctx.textAlign = "center";
    const step = Math.max(1, Math.ceil((t1 - t0) / 10));
    for (let t = Math.ceil(t0); t <= t1; t += step) ctx.fillText(String(t), x(t), height - PAD.bottom + 14);
    ctx.fillText("media time (s)", (PAD.left + width - PAD.right) / 2, height - 4);
  }

  window.affectstreamChart = { draw, taskColors };
})();
