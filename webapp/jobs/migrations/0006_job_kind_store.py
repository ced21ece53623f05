from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0005_job_gradient_set'),
    ]

    operations = [
        migrations.AlterField(
            model_name='job',
            name='kind',
            field=models.CharField(choices=[('compress', 'Compress'), ('decompress', 'Decompress and verify'), ('evaluate', 'Evaluate'), ('store', 'Store compressed')], max_length=12),
        ),
    ]
