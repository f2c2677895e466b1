from django import forms

from articles.models import Article


class ArticleForm(forms.ModelForm):
    """What ``POST /articles/`` accepts: a title and a body of at most 100,000 characters."""

    body = forms.CharField(max_length=100_000)

    class Meta:
        model = Article
        fields = ["title", "body"]
