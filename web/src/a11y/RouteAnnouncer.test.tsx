// @vitest-environment happy-dom
import { act, type ReactNode } from "react";
import { createRoot, type Root } from "react-dom/client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { RouteAnnouncer } from "./RouteAnnouncer";

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

let root: Root;
beforeEach(() => {
  document.body.innerHTML = '<div id="app"></div>';
  root = createRoot(document.getElementById("app")!);
});
afterEach(() => {
  act(() => root.unmount());
  document.body.innerHTML = "";
});

function show(page: string, content: ReactNode) {
  act(() =>
    root.render(
      <>
        <button type="button">Runs</button>
        <RouteAnnouncer page={page} />
        <main id="main" tabIndex={-1}>{content}</main>
      </>,
    ),
  );
}
const announced = () => document.querySelector('[data-testid="route-announcer"]')!.textContent;
/** MutationObserver callbacks run as microtasks: let them. */
const flush = () => act(() => Promise.resolve());

describe("RouteAnnouncer", () => {
  it("leaves the first page's focus alone, then moves focus to each new page's heading and announces it", () => {
    show("/runs", <h1>Runs</h1>);
    expect(document.activeElement).toBe(document.body);
    expect(document.title).toBe("Runs · AstraForge");
    document.querySelector("button")!.focus();
    show("/sandboxes", <h1>Sandboxes</h1>);
    expect(document.activeElement?.textContent).toBe("Sandboxes");
    expect(announced()).toBe("Sandboxes page");
  });

  it("waits for a heading that comes after the page's code, focusing <main> meanwhile", async () => {
    show("/runs", <h1>Runs</h1>);
    show("/runs/r-1", <p>Loading…</p>);
    expect(document.activeElement?.id).toBe("main");
    show("/runs/r-1", <h1>r-1</h1>);
    await flush();
    expect(document.activeElement?.tagName).toBe("H1");
    expect(announced()).toBe("r-1 page");
    show("/runs/r-1", <h1>Fix add()</h1>); // the run's title, once its data is in
    await flush();
    expect(announced()).toBe("Fix add() page");
    expect(document.title).toBe("Fix add() · AstraForge");
  });
});
