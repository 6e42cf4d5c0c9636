import { useState } from "react";
import { api, setKey } from "../api/client";
import { Button, Card, ErrorText, TextInput } from "../components/ui";

/** Sign in with an API key: checked against the API, then kept in sessionStorage (never in a URL). */
export function SignIn() {
  const [value, setValue] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  return (
    <Card className="mx-auto mt-16 max-w-md">
      <h1 className="mb-4 text-xl font-bold">Sign in</h1>
      <form
        method="post"
        action="#"
        className="flex flex-col gap-4"
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          setError(null);
          try {
            await api("/v1/runs?limit=1", { key: value.trim() });
            setKey(value.trim());
          } catch (err) {
            setError(err);
          } finally {
            setBusy(false);
          }
        }}
      >
        <TextInput label="API key" type="password" autoComplete="off" required value={value} onChange={(e) => setValue(e.target.value)} hint="Kept in this tab's session storage only." />
        <ErrorText error={error} />
        <Button type="submit" variant="primary" disabled={busy || !value.trim()}>Sign in</Button>
      </form>
    </Card>
  );
}
