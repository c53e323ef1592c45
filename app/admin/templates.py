"""Jinja templates of the admin's own pages, extending sqladmin's.

They live in Python rather than in .html files because the package build ships only Python
modules (pyproject declares no package data): a file template would be missing from an
installed wheel and the page would fail only there.
"""

from __future__ import annotations

from jinja2 import ChoiceLoader, DictLoader
from sqladmin import Admin

# Flash messages as alerts above the page: sqladmin shows them as toasts that vanish after
# three seconds, too quickly to read why an action was refused for some calls.
MESSAGES = """\
{% for message in get_flashed_messages(request) %}
<div class="col-12">
  <div class="alert alert-{{ message.category }} w-100 mb-3" role="alert">
    {% if message.title %}<strong>{{ message.title }}</strong> {% endif %}{{ message.message }}
  </div>
</div>
{% endfor %}
"""

LIST = """\
{% extends "sqladmin/list.html" %}
{% block content %}
{% include "sluice/messages.html" %}
{{ super() }}
{% endblock %}
"""

CALL_DETAILS = """\
{% extends "sqladmin/details.html" %}
{% block content %}
{% include "sluice/messages.html" %}
{{ super() }}
{% endblock %}
{% block details_table %}
{{ super() }}
<h3 class="mt-4" id="call-log">Log</h3>
<div class="table-responsive">
  <table class="table card-table table-vcenter table-bordered">
    <thead>
      <tr>
        <th>At</th><th>Phase</th><th>Outcome</th><th>HTTP</th><th>Latency (ms)</th>
        <th>TTL</th><th>Next try</th><th>Author</th><th>Error / detail</th>
      </tr>
    </thead>
    <tbody>
      {% for line in call_log %}
      <tr class="call-log-line">
        <td class="text-nowrap">{{ line.at }}</td>
        <td>{{ line.phase }}</td>
        <td>{{ line.outcome }}</td>
        <td>{{ line.http_status if line.http_status is not none else "" }}</td>
        <td>{{ "%.0f" % line.latency_ms if line.latency_ms is not none else "" }}</td>
        <td>{{ line.ttl if line.ttl is not none else "" }}</td>
        <td class="text-nowrap">{{ line.next_try or "" }}</td>
        <td>{{ line.author or "" }}</td>
        <td>
          {% if line.error %}<div class="text-danger">{{ line.error }}</div>{% endif %}
          {% if line.detail %}<pre class="mb-0">{{ line.detail }}</pre>{% endif %}
        </td>
      </tr>
      {% else %}
      <tr><td colspan="9" class="text-muted">No log lines.</td></tr>
      {% endfor %}
    </tbody>
  </table>
</div>
{% endblock %}
"""

TEMPLATES = {
    "sluice/messages.html": MESSAGES,
    "sluice/list.html": LIST,
    "sluice/call_details.html": CALL_DETAILS,
}


def install_templates(admin: Admin) -> None:
    """Put these templates first in the admin's loader (sqladmin's own stay reachable)."""
    env = admin.templates.env
    env.loader = ChoiceLoader([DictLoader(TEMPLATES), *([env.loader] if env.loader else [])])
