import { Module } from '@nestjs/common';
import { HealthController } from './health.controller.js';
import { HttpDrain } from './http-drain.js';
import { LessonsController } from './lessons.controller.js';
import { PrismaService } from './prisma.service.js';
import { RedisService } from './redis.service.js';
import { UsersController } from './users.controller.js';

@Module({
  controllers: [HealthController, LessonsController, UsersController],
  providers: [PrismaService, RedisService, HttpDrain],
})
export class AppModule {}
