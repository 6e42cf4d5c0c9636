// @vitest-environment happy-dom
import { afterEach, describe, expect, it } from "vitest";
import { keepFocusOnPage, returnFocus } from "./focus";

afterEach(() => {
  document.body.innerHTML = "";
});

function page() {
  document.body.innerHTML = '<main id="main" tabindex="-1"><h1>Run r-1</h1><button>Approve</button><button>Rerun</button></main>';
  const [approve, rerun] = document.querySelectorAll("button");
  return { approve, rerun, heading: document.querySelector("h1")! };
}

describe("focus helpers", () => {
  it("returnFocus gives focus to the button, or to the page's heading when the button cannot take it", () => {
    const { rerun, heading } = page();
    returnFocus(rerun);
    expect(document.activeElement).toBe(rerun);
    rerun.disabled = true;
    document.body.focus();
    returnFocus(rerun);
    expect(document.activeElement).toBe(heading);
    expect(heading.tabIndex).toBe(-1); // focusable by script, not a Tab stop
  });

  it("keepFocusOnPage moves focus off a control that went disabled, and leaves a usable one alone", () => {
    const { approve, rerun, heading } = page();
    rerun.focus();
    keepFocusOnPage();
    expect(document.activeElement).toBe(rerun);
    approve.focus();
    approve.disabled = true;
    keepFocusOnPage();
    expect(document.activeElement).toBe(heading);
  });
});
