"""The web UI in a real headless Chromium against a real server: chat streams an answer, thumbs-up and an edit land
in the feedback store, and the Runs page lists a run and opens its report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from browser_harness import CHROMIUM, CHROMIUM_ARGS, NEEDS_BROWSER
from serve_harness import make_state, serving
from tailorlm.core.system import System

pytestmark = [pytest.mark.integration, *NEEDS_BROWSER]
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    tmp = tmp_path_factory.mktemp("ui")
    run = tmp / "runs" / "20250102-120000-ladder-demo"
    (run / "report").mkdir(parents=True)
    meta = {
        "id": run.name,
        "name": "ladder-demo",
        "kind": "eval",
        "status": "complete",
        "created_at": "2025-01-02T12:00:00+00:00",
        "finished_at": "2025-01-02T12:05:00+00:00",
    }
    (run / "run.json").write_text(json.dumps(meta))
    (run / "metrics.json").write_text(json.dumps({"eval": {"f1": 0.4321}}))
    (run / "report" / "report.html").write_text("<!doctype html><title>Demo report</title><h1>Demo report</h1>")
    # temperature 1: greedy decoding of the tiny random model emits only newlines, and the test wants visible text.
    system = System(name="tiny", model=str(tiny_model_dir), generation={"max_new_tokens": 12, "temperature": 1.0})
    state = make_state([system], tmp, runs_dir=str(tmp / "runs"))
    with serving(state) as base:
        yield state, base


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, server: tuple[Any, str]) -> Iterator[Any]:
    _, base = server
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    outside: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((base, "data:")) else None)
    page.goto(base + "/")
    yield page
    context.close()
    assert errors == []
    assert outside == []  # everything the UI needs comes from the server: it works offline


def ask(page: Any, text: str) -> tuple[Any, str]:
    """Send ``text``; wait for the answer to finish streaming; return (the answer element, its response id)."""
    page.get_by_test_id("model-select").locator("option[value=tiny]").wait_for(state="attached")
    before = page.get_by_test_id("answer").count()
    page.get_by_test_id("message-input").fill(text)
    page.get_by_test_id("send").click()
    answer = page.get_by_test_id("answer").nth(before)
    # Streamed text appears in the answer element before the stream is over.
    page.wait_for_function(
        "n => { const t = document.querySelectorAll('[data-testid=answer-text]')[n]; "
        "return t && t.textContent.trim().length > 0; }",
        arg=before,
    )
    answer.get_by_test_id("thumbs-up").wait_for()  # the feedback bar comes with the final chunk
    response_id = answer.get_attribute("data-response-id")
    assert response_id and response_id.startswith("chatcmpl-")
    return answer, response_id


def stored(state: Any, response_id: str) -> list[Any]:
    return [f for f in state.store.feedback() if f.response_id == response_id]


def test_chat_streams_and_thumbs_up_is_stored(page: Any, server: tuple[Any, str]) -> None:
    state, _ = server
    answer, response_id = ask(page, "What is the capital of France?")
    text = answer.get_by_test_id("answer-text").inner_text()
    assert text.strip()
    assert state.store.get_response(response_id).response.strip() in text  # what was shown is what was stored

    answer.get_by_test_id("thumbs-up").click()
    answer.get_by_test_id("feedback-status").filter(has_text="saved").wait_for()
    assert answer.get_by_test_id("thumbs-up").get_attribute("aria-pressed") == "true"
    assert [f.rating for f in stored(state, response_id)] == ["up"]

    # A second turn: the conversation is sent whole (multi-turn).
    _, second = ask(page, "And of Italy?")
    messages = state.store.get_response(second).request["messages"]
    assert [m["role"] for m in messages[-3:]] == ["user", "assistant", "user"]


def test_edit_stores_the_better_answer(page: Any, server: tuple[Any, str]) -> None:
    state, _ = server
    answer, response_id = ask(page, "Say hello.")
    answer.get_by_test_id("edit").click()
    box = answer.get_by_test_id("edit-text")
    assert box.input_value() == state.store.get_response(response_id).response  # prefilled with the answer
    box.fill("Hello! A better answer, written by hand.")
    answer.get_by_test_id("edit-submit").click()
    answer.get_by_test_id("feedback-status").filter(has_text="saved").wait_for()
    assert [f.edited for f in stored(state, response_id)] == ["Hello! A better answer, written by hand."]


def test_compare_posts_a_pairwise_choice(page: Any, server: tuple[Any, str]) -> None:
    state, _ = server
    answer, left = ask(page, "Tell me a fact.")
    with page.expect_request("**/v1/chat/completions") as asked:
        answer.get_by_test_id("compare").click()
    assert asked.value.post_data_json["temperature"] == 0.8
    answer.get_by_test_id("compare-right-better").and_(answer.locator("button:enabled")).wait_for()
    answer.get_by_test_id("compare-right-better").click()
    answer.get_by_test_id("feedback-status").filter(has_text="saved").wait_for()
    (choice,) = stored(state, left)
    assert choice.choice == "other" and choice.compare_to and choice.compare_to != left
    # The same conversation asked again: the pair differs only in the answer.
    assert state.store.get_response(choice.compare_to).request == state.store.get_response(left).request


def sse(*events: Any) -> str:
    return "".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events)


def test_citations_tool_steps_and_stream_errors_render(page: Any) -> None:
    """What the tiny model cannot produce, from canned streams: a RAG answer's sources, tool steps, an error event."""
    chunk = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "model": "tiny"}
    # A tool call arrives in fragments: the name with the start of the arguments, then the rest of them.
    tool = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "search", "arguments": '{"q": '}}
    rest = {"index": 0, "function": {"arguments": '"x"}'}}
    rag = sse(
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [tool]}}]},
        {**chunk, "choices": [{"index": 0, "delta": {"tool_calls": [rest]}}]},
        {**chunk, "choices": [{"index": 0, "delta": {"content": "Sundays at 03:00 [1]."}, "finish_reason": None}]},
        {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "response_id": "chatcmpl-canned",
                               "abstained": False, "citations": [{"n": 1, "doc_id": "backup", "title": "Backups",
                               "source": "docs/backup.md", "snippet": "rebooted every Sunday"}]}]},
        "[DONE]",
    )  # fmt: skip
    failing = sse(
        {**chunk, "choices": [{"index": 0, "delta": {"content": "half an ans"}, "finish_reason": None}]},
        {"error": {"message": "generation failed on the server", "type": "server_error"}},
    )
    bodies = iter([rag, failing])
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=next(bodies)),
    )
    answer, _ = ask(page, "When is the backup server rebooted?")
    assert answer.get_attribute("data-response-id") == "chatcmpl-canned"
    assert answer.get_by_test_id("tool-step").inner_text().startswith("Tool step: search")
    assert '{"q": "x"}' in answer.get_by_test_id("tool-step").locator("pre").text_content()
    citation = answer.get_by_test_id("citation").inner_text()
    assert "Backups" in citation and "docs/backup.md" in citation and "rebooted every Sunday" in citation

    page.get_by_test_id("message-input").fill("And then?")
    page.get_by_test_id("send").click()
    page.get_by_test_id("error-banner").filter(has_text="generation failed on the server").wait_for()
    assert "half an ans" in page.get_by_test_id("answer").last.inner_text()


def test_runs_page_lists_a_run_and_opens_its_report(page: Any) -> None:
    page.get_by_test_id("nav-runs").click()
    row = page.get_by_test_id("run-row").filter(has_text="20250102-120000-ladder-demo")
    row.wait_for()
    assert "eval.f1: 0.432" in row.inner_text()
    page.set_viewport_size({"width": 375, "height": 800})  # a phone: the table turns into cards, nothing overflows
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    row.get_by_test_id("run-report-link").click()
    page.wait_for_url("**/report/report.html")
    assert page.title() == "Demo report"


def test_keyed_server_shows_401_then_opens_a_report_with_an_admin_key(
    browser: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from tailorlm.serve.auth import KeyStore

    run = tmp_path / "runs" / "20250103-090000-eval-keyed"
    (run / "report").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"id": run.name, "kind": "eval", "status": "complete"}))
    (run / "report" / "index.html").write_text("<!doctype html><title>Keyed report</title><p>ok</p>")
    admin_key, _ = KeyStore(tmp_path / "keys.json").create("ui-admin", scope="admin")
    system = System(name="tiny", model=str(tiny_model_dir), generation={"max_new_tokens": 4})
    state = make_state([system], tmp_path, runs_dir=str(tmp_path / "runs"))
    assert not state.open
    with serving(state) as base:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(base + "/")
        banner = page.get_by_test_id("error-banner")
        banner.filter(has_text="401").wait_for()  # the models list was refused, and the page says so
        assert "API key" in banner.inner_text()

        page.get_by_test_id("api-key").fill(admin_key)  # the key panel opened itself on the 401
        page.get_by_test_id("api-key-save").click()
        page.get_by_test_id("model-select").locator("option[value=tiny]").wait_for(state="attached")
        assert page.evaluate("localStorage.getItem('tailorlm.apiKey')") == admin_key

        # A report is a plain navigation (no Authorization header): the runs listing's cookie opens it.
        page.get_by_test_id("nav-runs").click()
        page.get_by_test_id("run-report-link").click()
        page.wait_for_url("**/report/index.html")
        assert page.title() == "Keyed report"
        cookies = {c["name"]: c for c in context.cookies()}
        assert admin_key not in json.dumps(cookies)  # the cookie names the key, it does not hold it
        context.close()
