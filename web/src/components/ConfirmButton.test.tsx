// @vitest-environment happy-dom
import { act, useState } from "react";
import { createRoot, type Root } from "react-dom/client";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ConfirmButton } from "./ConfirmButton";

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

let host: HTMLElement;
let root: Root;

beforeEach(() => {
  document.body.innerHTML = '<main id="main"><h1>Run r-1</h1><div id="app"></div></main>';
  host = document.getElementById("app")!;
  root = createRoot(host);
});

afterEach(() => {
  act(() => root.unmount());
  document.body.innerHTML = "";
});

const button = (name: string) => [...document.querySelectorAll("button")].find((b) => b.textContent === name)!;
const dialog = () => document.querySelector<HTMLElement>('[role="alertdialog"]');
const key = (k: string, init: KeyboardEventInit = {}) =>
  act(() => {
    (document.activeElement ?? document.body).dispatchEvent(new KeyboardEvent("keydown", { key: k, bubbles: true, cancelable: true, ...init }));
  });

/** Radix gives focus back in a zero-delay timer queued as the dialog unmounts: run it. */
const flushTimers = () => act(() => new Promise<void>((resolve) => setTimeout(resolve, 0)));

function render(onConfirm: () => void) {
  act(() => root.render(<ConfirmButton label="Reject" title="Reject this run?" description="The change is not merged." onConfirm={onConfirm} variant="danger" />));
}

describe("ConfirmButton", () => {
  it("asks first: an alert dialog, named and described, focus on the harmless choice", () => {
    const onConfirm = vi.fn();
    render(onConfirm);
    act(() => button("Reject").click());
    const d = dialog()!;
    expect(d).not.toBeNull();
    expect(document.getElementById(d.getAttribute("aria-labelledby")!)!.textContent).toBe("Reject this run?");
    expect(document.getElementById(d.getAttribute("aria-describedby")!)!.textContent).toBe("The change is not merged.");
    expect(document.activeElement?.textContent).toBe("Go back");
    expect(onConfirm).not.toHaveBeenCalled();
  });

  it("Escape cancels and gives focus back to the button that opened it", async () => {
    const onConfirm = vi.fn();
    render(onConfirm);
    const trigger = button("Reject");
    act(() => trigger.focus());
    act(() => trigger.click());
    key("Escape");
    await flushTimers();
    expect(dialog()).toBeNull();
    expect(onConfirm).not.toHaveBeenCalled();
    expect(document.activeElement).toBe(trigger);
  });

  it("keeps Tab inside the dialog while it is open", () => {
    render(vi.fn());
    act(() => button("Reject").click());
    const inside = [...dialog()!.querySelectorAll("button")];
    act(() => inside[inside.length - 1].focus());
    key("Tab");
    expect(document.activeElement).toBe(inside[0]);
    key("Tab", { shiftKey: true });
    expect(document.activeElement).toBe(inside[inside.length - 1]);
  });

  it("confirming acts once, closes, and returns focus to the button", async () => {
    const onConfirm = vi.fn();
    render(onConfirm);
    const trigger = button("Reject");
    act(() => trigger.click());
    const confirm = [...dialog()!.querySelectorAll("button")].find((b) => b.textContent === "Reject")!;
    act(() => confirm.click());
    await flushTimers();
    expect(onConfirm).toHaveBeenCalledTimes(1);
    expect(dialog()).toBeNull();
    expect(document.activeElement).toBe(trigger);
  });

  it("puts focus on the page's heading, not <body>, when the button went disabled meanwhile", async () => {
    function Disabling() {
      const [done, setDone] = useState(false);
      return <ConfirmButton label="Stop" title="Stop this sandbox?" description="Its processes end." disabled={done} onConfirm={() => setDone(true)} />;
    }
    act(() => root.render(<Disabling />));
    act(() => button("Stop").click());
    const confirm = [...dialog()!.querySelectorAll("button")].find((b) => b.textContent === "Stop")!;
    act(() => confirm.click());
    await flushTimers();
    expect(button("Stop").disabled).toBe(true);
    expect(document.activeElement?.tagName).toBe("H1");
  });
});
