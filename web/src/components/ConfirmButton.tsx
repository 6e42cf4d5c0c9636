/**
 * A button that asks before an action that cannot be taken back (reject a run, cancel it, stop a
 * sandbox): an alert dialog built from Radix Dialog as Radix's own AlertDialog is (role alertdialog,
 * no dismissal by a click outside). Focus starts on the harmless choice, stays inside while it is
 * open, Escape or the harmless choice closes it, and focus goes back to the button that opened it.
 */
import * as Dialog from "@radix-ui/react-dialog";
import { type ReactNode, useRef, useState } from "react";
import { returnFocus } from "../a11y/focus";
import { Button } from "./ui";

export interface ConfirmButtonProps {
  /** The button's text, and the dialog's confirming choice unless `confirmLabel` says otherwise. */
  label: string;
  title: string;
  description: ReactNode;
  confirmLabel?: string;
  /** The harmless choice: closes the dialog and does nothing. */
  keepLabel?: string;
  onConfirm: () => void;
  disabled?: boolean;
  variant?: "default" | "danger";
  className?: string;
}

export function ConfirmButton({ label, title, description, confirmLabel = label, keepLabel = "Go back", onConfirm, disabled, variant = "default", className }: ConfirmButtonProps) {
  const [open, setOpen] = useState(false);
  const trigger = useRef<HTMLButtonElement>(null);
  const keep = useRef<HTMLButtonElement>(null);
  return (
    <Dialog.Root open={open} onOpenChange={setOpen}>
      <Dialog.Trigger asChild>
        <Button ref={trigger} variant={variant} disabled={disabled} className={className}>{label}</Button>
      </Dialog.Trigger>
      <Dialog.Portal>
        <Dialog.Overlay className="fixed inset-0 bg-black/50" />
        <Dialog.Content
          role="alertdialog"
          data-testid="confirm-dialog"
          className="fixed left-1/2 top-1/3 w-[28rem] max-w-[95vw] -translate-x-1/2 rounded-lg bg-white p-4 text-slate-900 shadow-xl dark:bg-slate-900 dark:text-slate-100"
          onOpenAutoFocus={(e) => {
            e.preventDefault();
            keep.current?.focus();
          }}
          onCloseAutoFocus={(e) => {
            e.preventDefault();
            returnFocus(trigger.current);
          }}
          onPointerDownOutside={(e) => e.preventDefault()}
          onInteractOutside={(e) => e.preventDefault()}
        >
          <Dialog.Title className="text-lg font-bold">{title}</Dialog.Title>
          <Dialog.Description className="mt-1 text-sm">{description}</Dialog.Description>
          <div className="mt-4 flex justify-end gap-2">
            <Dialog.Close asChild>
              <Button ref={keep}>{keepLabel}</Button>
            </Dialog.Close>
            <Button
              variant="danger"
              onClick={() => {
                setOpen(false);
                onConfirm();
              }}
            >
              {confirmLabel}
            </Button>
          </div>
        </Dialog.Content>
      </Dialog.Portal>
    </Dialog.Root>
  );
}
