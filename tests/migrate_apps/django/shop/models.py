from django.db import models


class Order(models.Model):
    total_cents = models.IntegerField()
    created_at = models.CharField(max_length=32)
    note = models.CharField(max_length=40, null=True)

    class Meta:
        indexes = [models.Index(fields=["total_cents"], name="ix_order_total")]
