"""The webhook receiver as a Django view: ``path("flexpipe/webhooks/", include(
"flexpipe.contrib.django.urls"))`` in the project's urls.py.

The view is CSRF-exempt (the provider signs each delivery instead) and answers what
:class:`flexpipe.tasks.webhooks.Receiver` answers: 200 for a recorded (or already recorded)
event, 400 for one whose signature or timestamp does not verify.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST


@csrf_exempt
@require_POST
def webhook(request: HttpRequest) -> HttpResponse:
    """Receive one provider webhook delivery."""
    from flexpipe.tasks.webhooks import receiver

    headers = {key.lower(): value for key, value in request.headers.items()}
    reply = receiver().handle(request.body, headers)
    return JsonResponse(reply.body, status=reply.status)
