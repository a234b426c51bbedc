// Smaller pages: all subnets, and "not found".

import { html } from "../format.js";
import { empty, panel, setHtml } from "../ui.js";
import { subnetsTable } from "./overview.js";

export class SubnetsView {
  constructor(element, params, ctx) {
    this.ctx = ctx;
    this.element = element;
    setHtml(
      element,
      html`<div class="page-head"><div><h1>Subnets</h1>
        <div class="page-sub">each subnet runs its own miners and validators; Yuma consensus splits its emission</div></div></div>
        ${panel("All subnets", html`<div id="subnets-list">${empty("Loading…")}</div>`, { id: "subnets-panel" })}`,
    );
  }

  async refresh() {
    setHtml(this.element.querySelector("#subnets-list"), subnetsTable(this.ctx.state.subnets || []));
  }
}

export class NotFoundView {
  constructor(element) {
    setHtml(
      element,
      html`<div class="page-head"><div><h1>Nothing here</h1></div></div>
        ${empty(html`Try the <a href="#/">overview</a>, a block (<code>#/block/1</code>), an account
        (<code>#/account/&lt;address&gt;</code>), a subnet (<code>#/subnet/1</code>), a receipt
        (<code>#/receipt/&lt;hash&gt;</code>) or a dispute (<code>#/dispute/1</code>).`)}`,
    );
  }

  async refresh() {}
}
