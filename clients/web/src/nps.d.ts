/** The NPS prompt of the NPS feedback loop (docs/widget.md). */
export declare const VERSION: string;

export interface PromptText {
  title?: string;
  question?: string;
  /** The scale's ends: "Not at all likely" / "Extremely likely". */
  low?: string;
  high?: string;
  /** The follow-up question shown above the comment box, per score band. */
  why?: { detractor?: string; passive?: string; promoter?: string };
  placeholder?: string;
  send?: string;
  close?: string;
  thanks?: string;
}

export interface PromptOptions {
  /** The publishable key (nps_pk_...). */
  key: string;
  /** The survey id the key names. */
  survey: string;
  /** The loop's ingest address, e.g. https://nps.example.com (the script's own origin by default). */
  api?: string;
  /** Your id of the person; omitted with an anonymous key (a random id kept in localStorage). */
  respondentId?: string;
  /** Hex HMAC-SHA256 of respondentId under the key's identity secret, computed by your server. */
  respondentHash?: string;
  /** Segments the answer counts in, as with the API (plan, region, ...). */
  attributes?: Record<string, string>;
  text?: PromptText;
  /** Where the prompt's host element goes (document.body by default). */
  container?: Element;
  /** How long the thank-you stays, ms (4000). */
  thanksMs?: number;
}

export interface PromptResult {
  shown: boolean;
  /** Why it was not shown: the loop's reason (surveyed_recently, opted_out, not_sampled, ...), "network", or "status_<code>". */
  reason?: string;
  answered?: boolean;
  score?: number | null;
}

/** Asks the loop whether to show the prompt, shows it if so; resolves once it is closed. */
export declare function prompt(options: PromptOptions): Promise<PromptResult>;

declare global {
  interface Window {
    NPS: {
      VERSION: string;
      prompt(options: Partial<PromptOptions>): Promise<PromptResult>;
      identify(person: { respondentId?: string; respondentHash?: string; attributes?: Record<string, string> }): Promise<PromptResult>;
    };
  }
}
