"""The example tree T of templates-contract 3.5 and the 13 lines of MJML it generates, shared by
the engine's tests and the API's."""

T = {"id": "root", "type": "mjml", "children": [
    {"id": "head", "type": "mj-head", "children": [
        {"id": "pv", "type": "mj-preview", "content": "old preview"}]},
    {"id": "body", "type": "mj-body", "attributes": {"backgroundColor": "#ffffff"}, "children": [
        {"id": "s1", "type": "mj-section", "children": [
            {"id": "c1", "type": "mj-column", "children": [
                {"id": "t1", "type": "mj-text", "attributes": {"fontSize": "16px", "color": "#333333"},
                 "content": "<p>Hello {{ contact.first_name | default: \"there\" }}</p>"},
                {"id": "b1", "type": "mj-button",
                 "attributes": {"href": "https://shop.test/offer?x=1", "backgroundColor": "#ff0000"},
                 "content": "Shop"}]}]}]}]}

T_MJML = """<mjml>
  <mj-head>
    <mj-preview>old preview</mj-preview>
  </mj-head>
  <mj-body background-color="#ffffff">
    <mj-section>
      <mj-column>
        <mj-text color="#333333" font-size="16px"><p>Hello {{ contact.first_name | default: "there" }}</p></mj-text>
        <mj-button background-color="#ff0000" href="https://shop.test/offer?x=1">Shop</mj-button>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>"""
