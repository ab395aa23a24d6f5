// The task page: adds and completes tasks through the frontend's JSON API, re-renders the lists
// and shows what went wrong. Plain JavaScript, no build step. The markup of a task mirrors
// templates/_task.html, which renders the first list on the server.
"use strict";

(() => {
  const form = document.getElementById("new-task");
  if (!form) {
    return; // the sign-in page
  }
  const errorBox = document.getElementById("error");
  const statusLine = document.getElementById("status");
  const lists = {
    open: document.getElementById("open-tasks"),
    completed: document.getElementById("completed-tasks"),
  };
  const empty = {
    open: document.getElementById("open-empty"),
    completed: document.getElementById("completed-empty"),
  };
  const recurrence = document.getElementById("recurrence");
  const customField = document.getElementById("custom-rule-field");
  const customRule = document.getElementById("custom_rule");

  class SignedOut extends Error {}

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
    statusLine.textContent = "";
  }

  function showStatus(message) {
    errorBox.hidden = true;
    errorBox.textContent = "";
    statusLine.textContent = message;
  }

  // `message` is written by the frontend for people; `detail` may be backend's, passed through.
  function describe(payload, response) {
    if (payload && typeof payload.message === "string" && payload.message) {
      return payload.message;
    }
    if (payload && typeof payload.detail === "string" && payload.detail) {
      return payload.detail;
    }
    return `The request failed (HTTP ${response.status}).`;
  }

  async function api(method, path, body) {
    const headers = { accept: "application/json" };
    const init = { method, headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new Error("The frontend cannot be reached; check your connection and try again.");
    }
    let payload = null;
    try {
      payload = await response.json();
    } catch (error) {
      payload = null;
    }
    if (response.status === 401) {
      window.location.assign((payload && payload.signin) || "/?reason=expired");
      throw new SignedOut();
    }
    if (!response.ok) {
      throw new Error(describe(payload, response));
    }
    return payload;
  }

  function formatUtc(value) {
    if (!value) {
      return "";
    }
    const instant = new Date(value);
    if (Number.isNaN(instant.getTime())) {
      return String(value);
    }
    return `${instant.toISOString().slice(0, 16).replace("T", " ")} UTC`;
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  function taskItem(task) {
    const item = element("li", task.completed ? "task done" : "task");
    item.dataset.taskId = String(task.id);
    const line = element("div", "task-line");
    line.append(element("span", "task-title", task.title));
    line.append(element("span", `badge priority-${task.priority}`, task.priority));
    if (task.recurrence) {
      const badge = element("span", "badge recurrence", `\u21bb ${task.recurrence}`);
      badge.title = "Repeats";
      line.append(badge);
    }
    for (const tag of task.tags || []) {
      line.append(element("span", "tag", `#${tag}`));
    }
    item.append(line);
    if (task.description) {
      item.append(element("p", "task-description", task.description));
    }
    const meta = element("div", "task-meta");
    if (task.due_at) {
      meta.append(element("span", "due", `Due ${formatUtc(task.due_at)}`));
    }
    if (task.remind_at) {
      const sent = task.reminder_sent_at ? " (sent)" : "";
      meta.append(element("span", "reminder", `Reminder ${formatUtc(task.remind_at)}${sent}`));
    }
    if (task.completed && task.completed_at) {
      meta.append(element("span", "completed-at", `Completed ${formatUtc(task.completed_at)}`));
    }
    item.append(meta);
    if (!task.completed) {
      const button = element("button", "complete", "Complete");
      button.type = "button";
      button.dataset.taskId = String(task.id);
      item.append(button);
    }
    return item;
  }

  function instant(value, fallback) {
    const time = value ? Date.parse(value) : Number.NaN;
    return Number.isNaN(time) ? fallback : time;
  }

  function render(tasks) {
    // The same order as the server's: open by due time (none last), completed latest first.
    const open = tasks
      .filter((task) => !task.completed)
      .sort((a, b) => instant(a.due_at, Infinity) - instant(b.due_at, Infinity) || a.id - b.id);
    const completed = tasks
      .filter((task) => task.completed)
      .sort(
        (a, b) =>
          instant(b.completed_at, -Infinity) - instant(a.completed_at, -Infinity) || b.id - a.id,
      );
    for (const [name, group] of [["open", open], ["completed", completed]]) {
      lists[name].replaceChildren(...group.map(taskItem));
      empty[name].hidden = group.length > 0;
    }
  }

  async function refresh() {
    render(await api("GET", "/api/tasks"));
  }

  function report(error) {
    if (!(error instanceof SignedOut)) {
      showError(error.message);
    }
  }

  function newTask() {
    const data = new FormData(form);
    const text = (name) => String(data.get(name) || "").trim();
    let rule = text("recurrence");
    if (rule === "custom") {
      rule = text("custom_rule");
      if (!rule) {
        throw new Error("recurrence: write an RRULE, or choose another option under Repeats.");
      }
    }
    const minutes = text("remind_minutes_before");
    return {
      title: text("title"),
      description: text("description"),
      due_at: text("due_at") || null,
      priority: text("priority") || "medium",
      tags: text("tags"),
      recurrence: rule || null,
      remind_minutes_before: minutes === "" ? null : Number(minutes),
    };
  }

  recurrence.addEventListener("change", () => {
    const custom = recurrence.value === "custom";
    customField.hidden = !custom;
    customRule.required = custom;
    if (custom) {
      customRule.focus();
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = document.getElementById("add-task");
    button.disabled = true;
    try {
      const created = await api("POST", "/api/tasks", newTask());
      form.reset();
      customField.hidden = true;
      customRule.required = false;
      await refresh();
      showStatus(`Added \u201c${created.title}\u201d.`);
    } catch (error) {
      report(error);
    } finally {
      button.disabled = false;
    }
  });

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button.complete");
    if (!button) {
      return;
    }
    button.disabled = true;
    try {
      const task = await api("POST", `/api/tasks/${button.dataset.taskId}/complete`);
      await refresh();
      if (task.recurrence) {
        showStatus(`Completed \u201c${task.title}\u201d; its next occurrence will appear shortly.`);
        // recurring creates the next occurrence after backend's event: look again soon.
        for (const delay of [1000, 3000]) {
          window.setTimeout(() => refresh().catch(report), delay);
        }
      } else {
        showStatus(`Completed \u201c${task.title}\u201d.`);
      }
    } catch (error) {
      button.disabled = false;
      report(error);
    }
  });

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") {
      refresh().catch(report);
    }
  });
})();
