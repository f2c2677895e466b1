"""URLs of flexpipe's Django app: the webhook receiver at the include's root."""

from __future__ import annotations

from django.urls import path

from flexpipe.contrib.django import views

app_name = "flexpipe"
urlpatterns = [path("", views.webhook, name="webhook")]
