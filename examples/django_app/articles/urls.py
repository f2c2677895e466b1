from django.urls import path

from articles import views

urlpatterns = [
    path("", views.create_article, name="create-article"),
    path("<int:pk>/", views.show_article, name="show-article"),
]
