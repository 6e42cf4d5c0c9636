/** Small shared pieces: buttons, fields, badges. Focus rings and labels everywhere (keyboard first). */
import type { ComponentPropsWithRef, InputHTMLAttributes, ReactNode, SelectHTMLAttributes, TextareaHTMLAttributes } from "react";
import { useId } from "react";

const ring = "focus-visible:outline-2 focus-visible:outline-offset-2 focus-visible:outline-sky-600";

/** A button; `ref` passes through (React 19), so Radix triggers can return focus to it. */
export function Button({ variant = "default", className = "", ...rest }: ComponentPropsWithRef<"button"> & { variant?: "default" | "primary" | "danger" }) {
  const look = {
    default: "border border-slate-400 bg-white text-slate-900 hover:bg-slate-100 dark:border-slate-500 dark:bg-slate-800 dark:text-slate-100 dark:hover:bg-slate-700",
    primary: "bg-sky-700 text-white hover:bg-sky-800 dark:bg-sky-600 dark:hover:bg-sky-500 dark:text-slate-950",
    danger: "bg-red-700 text-white hover:bg-red-800 dark:bg-red-500 dark:text-slate-950 dark:hover:bg-red-400",
  }[variant];
  return <button type="button" className={`rounded px-3 py-1.5 text-sm font-medium disabled:opacity-50 ${look} ${ring} ${className}`} {...rest} />;
}

const control = `w-full rounded border border-slate-400 bg-white px-2 py-1.5 text-sm text-slate-900 dark:border-slate-500 dark:bg-slate-900 dark:text-slate-100 ${ring}`;

export function Field({ label, hint, children }: { label: string; hint?: string; children: (id: string) => ReactNode }) {
  const id = useId();
  return (
    <div className="flex flex-col gap-1">
      <label htmlFor={id} className="text-sm font-medium">{label}</label>
      {children(id)}
      {hint && <p className="text-xs text-slate-600 dark:text-slate-300">{hint}</p>}
    </div>
  );
}

export function TextInput({ label, hint, className = "", ...rest }: InputHTMLAttributes<HTMLInputElement> & { label: string; hint?: string }) {
  return <Field label={label} hint={hint}>{(id) => <input id={id} className={`${control} ${className}`} {...rest} />}</Field>;
}

export function TextArea({ label, hint, className = "", ...rest }: TextareaHTMLAttributes<HTMLTextAreaElement> & { label: string; hint?: string }) {
  return <Field label={label} hint={hint}>{(id) => <textarea id={id} className={`${control} font-mono ${className}`} {...rest} />}</Field>;
}

export function Select({ label, children, ...rest }: SelectHTMLAttributes<HTMLSelectElement> & { label: string }) {
  return <Field label={label}>{(id) => <select id={id} className={control} {...rest}>{children}</select>}</Field>;
}

const STATE_COLOURS: Record<string, string> = {
  merged: "bg-emerald-100 text-emerald-900 dark:bg-emerald-900 dark:text-emerald-100",
  approved: "bg-emerald-100 text-emerald-900 dark:bg-emerald-900 dark:text-emerald-100",
  ready: "bg-emerald-100 text-emerald-900 dark:bg-emerald-900 dark:text-emerald-100",
  awaiting_review: "bg-amber-100 text-amber-900 dark:bg-amber-900 dark:text-amber-100",
  failed: "bg-red-100 text-red-900 dark:bg-red-900 dark:text-red-100",
  rejected: "bg-red-100 text-red-900 dark:bg-red-900 dark:text-red-100",
  cancelled: "bg-slate-200 text-slate-900 dark:bg-slate-700 dark:text-slate-100",
  terminated: "bg-slate-200 text-slate-900 dark:bg-slate-700 dark:text-slate-100",
};

export function StateBadge({ state }: { state: string }) {
  const look = STATE_COLOURS[state] ?? "bg-sky-100 text-sky-900 dark:bg-sky-900 dark:text-sky-100";
  return <span data-state={state} className={`inline-block rounded-full px-2 py-0.5 text-xs font-semibold ${look}`}>{state.replace("_", " ")}</span>;
}

export function ErrorText({ error }: { error: unknown }) {
  if (!error) return null;
  return <p role="alert" className="text-sm text-red-700 dark:text-red-300">{error instanceof Error ? error.message : String(error)}</p>;
}

export function Card({ children, className = "" }: { children: ReactNode; className?: string }) {
  return <section className={`rounded-lg border border-slate-300 bg-white p-4 dark:border-slate-700 dark:bg-slate-900 ${className}`}>{children}</section>;
}
