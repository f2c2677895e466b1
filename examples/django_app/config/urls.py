from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),  # flexpipe's jobs, results and bulk jobs are there
    path("articles/", include("articles.urls")),
]
